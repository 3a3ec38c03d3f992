/* Loading data files the way a model expects them (see prep.h). */
#include "cli/prep.h"
#include "cli/commands.h"
#include "core/model.h"
#include "core/alloc.h"
#include "core/codec.h"
#include "core/json.h"
#include "net/channel.h"

#include <cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static fed_data_format parse_format(const char *s) {
    if (strcmp(s, "csv") == 0) return FED_FORMAT_CSV;
    if (strcmp(s, "sklearn") == 0) return FED_FORMAT_SKLEARN;
    if (strcmp(s, "idx") == 0) return FED_FORMAT_IDX;
    return FED_FORMAT_AUTO;
}

/* Keeps the examples whose class is in the comma-separated list (ids or names). */
static fed_err keep_classes(fed_dataset **d, const char *list, const char *path) {
    fed_dataset *all = *d;
    bool *keep = fed_calloc(all->num_classes, sizeof *keep);
    size_t *idx = fed_mallocarray(all->n ? all->n : 1, sizeof *idx);
    fed_err err = FED_ENOMEM;
    if (!keep || !idx) goto done;
    for (const char *p = list; *p;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        size_t k = all->num_classes;
        if (all->class_names) {
            for (size_t j = 0; j < all->num_classes; j++)
                if (strlen(all->class_names[j]) == len && strncmp(all->class_names[j], p, len) == 0)
                    k = j;
        } else if (len > 0 && len < 10 && strspn(p, "0123456789") >= len) {
            k = 0;
            for (size_t j = 0; j < len; j++) k = 10 * k + (size_t)(p[j] - '0');
        }
        if (k >= all->num_classes) {
            err = fed_errorf(FED_EINVAL, "--only-classes: %s has no class \"%.*s\"", path, (int)len,
                             p);
            goto done;
        }
        keep[k] = true;
        p += len + (comma ? 1 : 0);
    }
    size_t n = 0;
    for (size_t i = 0; i < all->n; i++)
        if (keep[all->y[i]]) idx[n++] = i;
    fed_dataset *sub = NULL;
    if ((err = fed_data_subset(&sub, all, idx, n))) goto done;
    sub->stats = all->stats;
    fed_data_destroy(d);
    *d = sub;
done:
    fed_free(idx);
    fed_free(keep);
    return err;
}

static fed_err load_raw(fed_dataset **out, const char *path, const data_cfg *dc,
                        const char *classes);

fed_err prep_load(fed_dataset **out, const char *path, const data_cfg *dc, const char *classes) {
    fed_err err = load_raw(out, path, dc, classes);
    if (!err && dc->only && (err = keep_classes(out, dc->only, path))) fed_data_destroy(out);
    return err;
}

/* Class names known before a file is read: --classes and the model's (which must agree). */
typedef struct known {
    cJSON *arr;         /* the model's parsed META_CLASSES, or NULL */
    char *copy;         /* --classes split in place, or NULL */
    const char **names; /* (n) borrowed from arr or copy, or NULL */
    size_t n;           /* entries of names */
} known;

static void known_free(known *k) {
    cJSON_Delete(k->arr);
    fed_free(k->copy);
    fed_free(k->names);
    memset(k, 0, sizeof *k);
}

/* The model's names (JSON array) into k. */
static fed_err model_classes(known *k, const char *classes) {
    fed_json_hooks();
    k->arr = cJSON_Parse(classes);
    int n = k->arr ? cJSON_GetArraySize(k->arr) : 0;
    if (!cJSON_IsArray(k->arr) || n < 1)
        return fed_errorf(FED_EFORMAT, "model metadata %s: not a JSON array of names",
                          META_CLASSES);
    if (!(k->names = fed_mallocarray((size_t)n, sizeof *k->names))) return FED_ENOMEM;
    for (const cJSON *it = k->arr->child; it; it = it->next, k->n++) {
        if (!cJSON_IsString(it))
            return fed_errorf(FED_EFORMAT, "model metadata %s: entry %zu is not a string",
                              META_CLASSES, k->n);
        k->names[k->n] = it->valuestring;
    }
    return FED_OK;
}

/* --classes into k, checked against the model's names (model, JSON) when k has them. */
static fed_err option_classes(known *k, const char *list, const char *model) {
    size_t n = 1;
    for (const char *p = list; *p; p++) n += *p == ',';
    char *copy = fed_strdup(list);
    const char **names = fed_mallocarray(n, sizeof *names);
    if (!copy || !names) {
        fed_free(copy);
        fed_free(names);
        return FED_ENOMEM;
    }
    size_t i = 0;
    for (char *p = copy;; p++) {
        names[i++] = p;
        p = strchr(p, ',');
        if (!p) break;
        *p = '\0';
    }
    fed_err err = FED_OK;
    for (size_t a = 0; a < n && !err; a++) {
        if (!*names[a]) err = fed_errorf(FED_EINVAL, "--classes %s: an empty class name", list);
        for (size_t b = 0; b < a && !err; b++)
            if (strcmp(names[a], names[b]) == 0)
                err = fed_errorf(FED_EINVAL, "--classes %s: \"%s\" twice", list, names[a]);
    }
    bool same = k->names && k->n == n;
    for (size_t a = 0; same && a < n; a++) same = strcmp(k->names[a], names[a]) == 0;
    if (!err && k->names && !same)
        err = fed_errorf(FED_EINVAL, "--classes %s: the model's classes are %.200s", list, model);
    if (err) {
        fed_free(copy);
        fed_free(names);
        return err;
    }
    known_free(k);
    k->copy = copy;
    k->names = names;
    k->n = n;
    return FED_OK;
}

static fed_err known_classes(known *k, const data_cfg *dc, const char *classes) {
    memset(k, 0, sizeof *k);
    fed_err err = classes ? model_classes(k, classes) : FED_OK;
    if (!err && dc->classes) err = option_classes(k, dc->classes, classes);
    if (err) known_free(k);
    return err;
}

static fed_err load_raw(fed_dataset **out, const char *path, const data_cfg *dc,
                        const char *classes) {
    *out = NULL;
    if (dc->labels) {
        if (dc->format && strcmp(dc->format, "auto") != 0 && strcmp(dc->format, "idx") != 0)
            return fed_errorf(FED_EINVAL, "--labels: only IDX data has a separate labels file");
        return fed_data_load_idx(out, path, dc->labels);
    }
    fed_csv_options o;
    memset(&o, 0, sizeof o);
    o.format = parse_format(dc->format ? dc->format : "auto");
    o.header = !dc->header || strcmp(dc->header, "auto") == 0 ? FED_HEADER_AUTO
               : strcmp(dc->header, "yes") == 0               ? FED_HEADER_YES
                                                              : FED_HEADER_NO;
    o.label = dc->label;
    o.missing = !dc->missing || strcmp(dc->missing, "error") == 0 ? FED_MISSING_ERROR
                : strcmp(dc->missing, "drop") == 0                ? FED_MISSING_DROP
                                                                  : FED_MISSING_MEAN;
    known k;
    fed_err err = known_classes(&k, dc, classes);
    if (err) return err;
    o.classes = k.names;
    o.num_classes = k.n;
    o.keep_bytes = dc->keep_bytes;
    err = fed_data_load(out, path, &o);
    known_free(&k);
    return err;
}

/* ---- text data ------------------------------------------------------------------------ */

fed_err prep_text_open(prep_text *pt, const data_cfg *dc, const fed_meta *meta,
                       const fed_model *m) {
    memset(pt, 0, sizeof *pt);
    const char *js = meta ? fed_meta_get(meta, META_TOKENIZER) : NULL;
    fed_err err = FED_OK;
    if (dc->tokenizer) {
        err = fed_tokenizer_load(&pt->tok, dc->tokenizer);
        if (err) return fed_errprefix(err, "--tokenizer");
        pt->from_option = true;
    } else if (js) {
        err = fed_tokenizer_parse(&pt->tok, js, strlen(js), "model metadata " META_TOKENIZER);
        if (err) return err;
    }
    if (m) {
        fed_shape in = fed_arch_input_shape(fed_model_arch(m));
        pt->len = in.ndim == 1 ? in.d[0] : 0; /* 0: no text model; checked when text comes */
        pt->lm_model = fed_arch_is_lm(fed_model_arch(m));
    }
    return FED_OK;
}

void prep_text_close(prep_text *pt) {
    fed_tokenizer_destroy(&pt->tok);
}

static fed_err load_text(fed_dataset **out, const char *path, const data_cfg *dc,
                         const char *classes, prep_text *pt) {
    if (!pt->tok)
        return fed_errorf(FED_EINVAL,
                          "%s is text data (JSON lines, or CSV with a \"text\" column): give "
                          "--tokenizer VOCAB, or a model whose metadata has %s",
                          path, META_TOKENIZER);
    if (pt->len == 0 || pt->len > FED_TEXT_MAX_LEN)
        return fed_errorf(FED_EINVAL,
                          "%s is text data, but the model's input is not one sequence of token "
                          "ids (its input shape must be [T])",
                          path);
    known k;
    fed_err err = known_classes(&k, dc, classes);
    if (err) return err;
    fed_text_options o = {FED_TEXT_AUTO, dc->drop_empty != 0, k.names, k.n};
    err = fed_data_load_text(out, path, pt->tok, pt->len, &o, &pt->stats);
    known_free(&k);
    return err;
}

/* Windows of the documents of paths[0..k) for a language model; what names the input in
 * the refusals ("--text", or the file). */
static fed_err load_lm(fed_dataset **out, const char *const *paths, size_t k, prep_text *pt,
                       const char *what) {
    *out = NULL;
    pt->loaded = pt->lm = false;
    if (!pt->tok)
        return fed_errorf(
            FED_EINVAL,
            "%s: give --tokenizer TOK.json, or a model whose metadata has " META_TOKENIZER, what);
    if (pt->len < 2)
        return fed_errorf(FED_EINVAL,
                          "%s: the model's input is not a window of T >= 2 token ids "
                          "(its input shape must be [T])",
                          what);
    fed_err err = fed_data_load_text_lm(out, paths, k, pt->tok, pt->len, &pt->lm_stats);
    pt->loaded = pt->lm = !err;
    return err;
}

fed_err prep_load_data(fed_dataset **out, const char *path, const data_cfg *dc, const char *classes,
                       prep_text *pt) {
    *out = NULL;
    pt->loaded = false;
    bool text = false;
    fed_err err = dc->labels ? FED_OK : fed_text_sniff(path, &text);
    if (err) return err;
    if (pt->lm_model && (text || prep_is_plain_text(path)))
        return load_lm(out, &path, 1, pt, path); /* windows of the documents' ids */
    if (text) {
        err = load_text(out, path, dc, classes, pt);
        pt->loaded = !err;
    } else if (dc->tokenizer) {
        err = fed_errorf(FED_EINVAL,
                         "--tokenizer: %s is not text data (JSON lines, or CSV with a \"text\" "
                         "column)",
                         path);
    } else {
        err = load_raw(out, path, dc, classes);
    }
    if (!err && dc->only && (err = keep_classes(out, dc->only, path))) fed_data_destroy(out);
    return err;
}

fed_err prep_tokenizer_sha(const fed_tokenizer *t, uint8_t out[32]) {
    char *js = NULL;
    fed_err err = fed_tokenizer_to_json(t, &js);
    if (err) return err;
    fed_sha256(js, strlen(js), out);
    fed_free(js);
    return FED_OK;
}

bool prep_is_plain_text(const char *path) {
    size_t n = strlen(path);
    return (n > 4 && strcmp(path + n - 4, ".txt") == 0) ||
           (n > 7 && strcmp(path + n - 7, ".txt.gz") == 0);
}

fed_err prep_load_lm(fed_dataset **out, const char *list, prep_text *pt) {
    *out = NULL;
    size_t n = 1;
    for (const char *p = list; *p; p++) n += *p == ',';
    char *copy = fed_strdup(list);
    const char **paths = fed_mallocarray(n, sizeof *paths);
    fed_err err = FED_ENOMEM;
    if (copy && paths) {
        size_t k = 0;
        for (char *p = copy, *next; p; p = next) {
            next = strchr(p, ',');
            if (next) *next++ = '\0';
            if (*p) paths[k++] = p;
        }
        err = load_lm(out, paths, k, pt, "--text");
    }
    fed_free(paths);
    fed_free(copy);
    return err;
}

fed_err prep_text_report(const prep_text *pt, fed_meta *meta, const char *command, const char *data,
                         bool augment) {
    if (fed_meta_get(meta, META_STANDARDIZE))
        return fed_errorf(FED_EINVAL,
                          "%s is text data, but the model standardises its inputs (%s): token ids "
                          "must reach it unchanged",
                          data, META_STANDARDIZE);
    if (augment)
        return fed_errorf(FED_EINVAL, "--noise, --shift and --hflip do not apply to text data");
    const fed_text_stats *st = &pt->stats;
    const fed_text_lm_stats *lm = &pt->lm_stats;
    if (pt->lm)
        printf("%s: text, %zu files, %zu documents, %zu tokens (%s tokenizer, %zu ids): %zu "
               "windows of %zu ids (%zu padded, %zu single ids dropped)\n",
               command, lm->files, lm->documents, lm->tokens, fed_tokenizer_kind(pt->tok),
               fed_tokenizer_vocab_size(pt->tok), lm->windows, pt->len, lm->padded, lm->dropped);
    else
        printf("%s: text, %zu texts (%zu empty dropped), %zu token ids per example; %zu tokens, "
               "%.2f%% unknown, %zu texts truncated\n",
               command, st->rows, st->dropped_empty, pt->len, st->tokens,
               st->tokens ? 100.0 * (double)st->unknown / (double)st->tokens : 0.0, st->truncated);
    if (!pt->from_option) return FED_OK;
    char *js = NULL;
    fed_err err = fed_tokenizer_to_json(pt->tok, &js);
    if (!err) err = fed_meta_set(meta, META_TOKENIZER, js);
    fed_free(js);
    return err;
}

fed_err prep_apply_meta_std(const fed_meta *meta, fed_dataset *d) {
    const char *js = meta ? fed_meta_get(meta, META_STANDARDIZE) : NULL;
    if (!js) return FED_OK;
    fed_standardizer *s = NULL;
    fed_err err = fed_std_from_json(&s, js);
    if (err) return err;
    err = fed_std_apply(s, d);
    fed_std_destroy(&s);
    return err;
}

fed_err prep_classes_json(const fed_dataset *d, char **json) {
    *json = NULL;
    if (!d->class_names) return FED_OK;
    fed_json_hooks();
    cJSON *arr = cJSON_CreateArray();
    if (!arr) return FED_ENOMEM;
    for (size_t i = 0; i < d->num_classes; i++) {
        cJSON *s = cJSON_CreateString(d->class_names[i]);
        if (!s || !cJSON_AddItemToArray(arr, s)) {
            cJSON_Delete(s);
            cJSON_Delete(arr);
            return FED_ENOMEM;
        }
    }
    *json = cJSON_PrintUnformatted(arr);
    cJSON_Delete(arr);
    return *json ? FED_OK : FED_ENOMEM;
}

fed_err prep_load_model(fed_model **m, fed_meta **meta, const char *path, const char *arch,
                        bool allow_extra) {
    *m = NULL;
    *meta = NULL;
    if (!arch && !allow_extra) return fed_model_load(m, path, meta);
    fed_arch *a = NULL;
    fed_st_file *f = NULL;
    fed_err err = fed_st_read(&f, path);
    if (err) return err;
    const fed_meta *fm = fed_st_meta(f);
    const char *spec = arch ? arch : fed_meta_get(fm, FED_META_ARCH);
    if (!spec) {
        err =
            fed_errorf(FED_EFORMAT, "%s: no %s in __metadata__; give the architecture with --arch",
                       path, FED_META_ARCH);
        goto done;
    }
    if ((err = arch ? cli_read_arch(&a, spec) : fed_arch_parse(&a, spec))) goto done;
    if ((err = fed_model_new(m, a))) goto done;
    if ((err = fed_model_load_weights(*m, f, allow_extra ? FED_LOAD_ALLOW_EXTRA : 0))) goto done;
    if ((err = fed_meta_new(meta))) goto done;
    for (size_t i = 0; i < fed_meta_count(fm) && !err; i++) {
        const char *k = fed_meta_key(fm, i);
        /* A spec given by hand replaces the file's own; frozen flags start fresh. */
        if (strcmp(k, FED_META_ARCH) == 0 || strcmp(k, FED_META_FROZEN) == 0) continue;
        err = fed_meta_set(*meta, k, fed_meta_value(fm, i));
    }
done:
    if (err) {
        fed_model_destroy(m);
        fed_meta_destroy(meta);
    }
    fed_arch_destroy(&a);
    fed_st_close(&f);
    return err;
}

fed_err prep_strategy(const strategy_cfg *sc, fed_strategy_config *out) {
    fed_strategy_kind kind;
    fed_err err = fed_strategy_parse(sc->kind, &kind);
    if (err) return err;
    *out = fed_strategy_defaults(kind);
    if (sc->eta > 0) out->eta = (float)sc->eta;
    out->momentum = (float)sc->beta;
    out->beta1 = (float)sc->b1;
    out->beta2 = (float)sc->b2;
    out->tau = (float)sc->tau;
    return FED_OK;
}

/* Copies the options into cc->secagg. */
static void prep_secagg(const secagg_cfg *sc, fed_coord_config *cc) {
    cc->secagg.on = sc->on != 0;
    cc->secagg.degree = (uint32_t)sc->degree;
    cc->secagg.threshold = (uint32_t)sc->threshold;
    cc->secagg.clip = sc->clip;
    cc->secagg.quant = (uint32_t)sc->quant;
    cc->secagg.phase_ms = sc->phase_ms;
}

/* Copies the options into cc->retry and cc->max_examples_per_site. */
static void prep_retry(const retry_cfg *rc, fed_coord_config *cc) {
    cc->retry.backoff_ms = (int64_t)rc->backoff_ms;
    cc->retry.backoff_max_ms = (int64_t)rc->backoff_max_ms;
    cc->retry.max_failed_attempts =
        rc->max_failed > UINT32_MAX ? UINT32_MAX : (uint32_t)rc->max_failed;
    cc->max_examples_per_site = (uint64_t)rc->max_examples;
}

/* The input-stats choice for a run with DP clipping dp_clip. */
static bool prep_input_stats(const char *choice, double dp_clip) {
    if (strcmp(choice, "on") == 0) return true;
    if (strcmp(choice, "off") == 0) return false;
    return dp_clip == 0; /* auto: the statistics would be released without DP noise */
}

fed_err prep_coord_shared(const coord_shared_cfg *s, fed_coord_config *cc) {
    cc->rounds = s->rounds;
    cc->fraction = s->fraction;
    cc->deadline_ms = (int64_t)s->deadline_ms;
    cc->train.epochs = (uint32_t)s->epochs;
    cc->train.batch = (uint32_t)s->batch;
    cc->train.optimizer = s->optimizer;
    cc->train.lr = (float)s->lr;
    cc->train.momentum = (float)s->momentum;
    cc->train.weight_decay = (float)s->weight_decay;
    cc->train.clip_norm = (float)s->clip_norm;
    cc->train.max_steps = s->max_steps;
    cc->freeze = s->freeze;
    fed_err err = prep_strategy(&s->sc, &cc->strategy);
    if (err) return err;
    cc->dp = s->dp;
    prep_secagg(&s->sa, cc);
    cc->max_update_norm = s->max_update_norm;
    if ((err = fed_robust_parse(s->rb.rule, &cc->robust.rule))) return err;
    cc->robust.byzantine = s->rb.byzantine;
    cc->robust.trim = s->rb.trim;
    cc->robust.norm_bound = s->rb.norm_bound;
    cc->robust.spill_dir = s->rb.spill_dir;
    fed_codec codec;
    if ((err = fed_codec_parse(&codec, s->compress))) return fed_errprefix(err, "--compress");
    if (fed_codec_on(&codec) && s->sa.on)
        return fed_errorf(FED_EINVAL,
                          "--compress %s with --secagg: the masked sum must stay exact, and "
                          "secagg already quantizes each update to 32-bit fixed point; drop "
                          "--compress",
                          s->compress);
    cc->compress = s->compress;
    cc->compress_down = s->compress_down;
    prep_retry(&s->rc, cc);
    cc->input_stats = prep_input_stats(s->input_stats, s->dp.clip);
    cc->metrics_file = s->metrics;
    cc->target_accuracy = s->target_accuracy;
    cc->out = s->out;
    return FED_OK;
}

/* ---- LoRA ------------------------------------------------------------------------------ */

/* True when m has LoRA adapters (a tensor named *.lora_A). */
static bool has_adapters(const fed_model *m) {
    for (size_t i = 0; i < fed_model_num_tensors(m); i++) {
        const char *name = fed_model_tensor(m, i)->name;
        size_t len = strlen(name);
        if (len > 7 && strcmp(name + len - 7, ".lora_A") == 0) return true;
    }
    return false;
}

fed_err prep_lora(fed_model **m, const lora_cfg *lc, bool new_head, uint64_t seed,
                  bool *keep_frozen) {
    if (keep_frozen) *keep_frozen = false;
    if (!lc->rank && (lc->targets || lc->alpha > 0.0))
        return fed_errorf(FED_EINVAL, "--lora-targets and --lora-alpha need --lora-rank");
    if (lc->rank) {
        size_t skip = SIZE_MAX, matched = 0;
        const fed_arch *arch = fed_model_arch(*m);
        if (new_head)
            for (size_t i = fed_arch_num_layers(arch); i-- > 0 && skip == SIZE_MAX;)
                if (fed_arch_layer(arch, i)->kind == FED_LAYER_LINEAR) skip = i;
        float alpha = lc->alpha > 0.0 ? (float)lc->alpha : (float)lc->rank;
        fed_model *n = NULL;
        fed_err err = fed_model_add_lora(&n, *m, lc->rank, alpha, lc->targets, skip,
                                         seed ^ 0x6c6f7261ull, &matched);
        if (err) return fed_errprefix(err, "--lora-targets");
        fed_model_destroy(m);
        *m = n;
        printf("LoRA: rank %zu, alpha %g on %zu weights\n", lc->rank, (double)alpha, matched);
    }
    if (!lc->aggregation) {
        if (keep_frozen) *keep_frozen = lc->rank > 0;
        return FED_OK;
    }
    if (!has_adapters(*m))
        return fed_errorf(FED_EINVAL,
                          "--lora-aggregation %s: the model has no LoRA adapters (give "
                          "--lora-rank, or a model with *.lora_A tensors)",
                          lc->aggregation);
    if (keep_frozen) *keep_frozen = true;
    if (strcmp(lc->aggregation, "frozen-a") != 0) {
        printf("LoRA aggregation: factors (A and B averaged separately)\n");
        return FED_OK;
    }
    size_t frozen = 0;
    fed_err err = fed_model_set_trainable_spec(*m, "*.lora_A", false, &frozen);
    if (err) return fed_errprefix(err, "--lora-aggregation frozen-a");
    printf("LoRA aggregation: frozen-a (%zu lora_A tensors frozen, only B trains)\n", frozen);
    return FED_OK;
}
