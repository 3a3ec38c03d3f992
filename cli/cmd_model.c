/* `fedtune init` (a fresh model file from an architecture), `fedtune info` (what a
 * model file holds: architecture, tensors, parameter counts, metadata) and `fedtune
 * merge` (LoRA adapters folded into their weights). */
#include "cli/commands.h"
#include "cli/prep.h"
#include "core/alloc.h"
#include "core/arch.h"
#include "core/model.h"
#include "core/safetensors.h"

#include <stdio.h>
#include <string.h>

/* ---- init ------------------------------------------------------------------------------ */

typedef struct init_cfg {
    const char *arch; /* spec: preset name, JSON, or @file */
    const char *out;  /* model file to write */
    long seed;        /* initialisation seed */
} init_cfg;

#define F(field) offsetof(init_cfg, field)
static const opt_spec init_opts[] = {
    {"arch", OPT_STRING, NULL, 1, 0, NULL, F(arch),
     "architecture: preset (fedavg-2nn, fedavg-cnn), JSON, or @FILE with JSON"},
    {"out", OPT_STRING, NULL, 1, 0, NULL, F(out), "model file to write (.safetensors)"},
    {"seed", OPT_INT, "1", 0, 9007199254740991.0, NULL, F(seed), "initialisation seed"},
    {NULL, OPT_INT, NULL, 0, 0, NULL, 0, NULL},
};
#undef F

static const opt_table init_table = {
    "init", "Write a freshly initialised model for an architecture to a safetensors file.",
    init_opts, NULL};

fed_err cli_read_arch(fed_arch **out, const char *spec) {
    *out = NULL;
    if (spec[0] != '@') return fed_arch_parse(out, spec);
    const char *path = spec + 1;
    FILE *f = fopen(path, "rb");
    if (!f) return fed_errorf(FED_EIO, "--arch: cannot open %s", path);
    char *buf = NULL;
    size_t len = 0, cap = 0;
    fed_err err = FED_OK;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = cap ? 2 * cap : 8192;
            if (cap > ((size_t)16 << 20)) {
                err = fed_errorf(FED_EFORMAT, "--arch: %s is larger than 16 MiB", path);
                break;
            }
            char *b = fed_realloc(buf, cap);
            if (!b) {
                err = FED_ENOMEM;
                break;
            }
            buf = b;
        }
        size_t got = fread(buf + len, 1, 4096, f);
        len += got;
        if (got < 4096) break;
    }
    if (!err && ferror(f)) err = fed_errorf(FED_EIO, "--arch: cannot read %s", path);
    fclose(f);
    if (!err) {
        buf[len] = '\0';
        err = fed_arch_parse(out, buf);
        if (err) err = fed_errprefix(err, "%s", path);
    }
    fed_free(buf);
    return err;
}

static fed_err run_init(const void *cfg) {
    const init_cfg *c = cfg;
    if (!c->arch) return fed_errorf(FED_EINVAL, "--arch is required");
    if (!c->out) return fed_errorf(FED_EINVAL, "--out is required");
    fed_arch *arch = NULL;
    fed_model *m = NULL;
    fed_err err = cli_read_arch(&arch, c->arch);
    if (!err) err = fed_model_new(&m, arch);
    if (!err) {
        fed_model_init(m, (uint64_t)c->seed);
        err = fed_model_save(m, c->out, NULL);
    }
    if (!err)
        printf("init: wrote %s (%zu parameters, seed %ld)\n", c->out, fed_model_num_params(m),
               c->seed);
    fed_model_destroy(&m);
    fed_arch_destroy(&arch);
    return err;
}

int cmd_init(int argc, char **argv) {
    init_cfg c;
    return cli_run(&init_table, &c, sizeof c, argc, argv, run_init);
}

/* ---- info ------------------------------------------------------------------------------ */

typedef struct info_cfg {
    const char *model; /* model file */
    const char *arch;  /* architecture of a weights-only model file */
    int allow_extra;   /* ignore tensors the architecture lacks */
    int tensors;       /* list every tensor */
} info_cfg;

#define F(field) offsetof(info_cfg, field)
static const opt_spec info_opts[] = {
    {"model", OPT_STRING, NULL, 1, 0, NULL, F(model), "model file (.safetensors)"},
    {"arch", OPT_STRING, NULL, 1, 0, NULL, F(arch),
     "architecture of a weights-only model file (e.g. exported from PyTorch)"},
    {"allow-extra", OPT_BOOL, "false", 1, 0, NULL, F(allow_extra),
     "ignore tensors of the file that the architecture lacks"},
    {"tensors", OPT_BOOL, "true", 1, 0, NULL, F(tensors), "list every tensor"},
    {NULL, OPT_INT, NULL, 0, 0, NULL, 0, NULL},
};
#undef F

static const opt_table info_table = {
    "info", "Show a model file: architecture, tensors, parameter and trainable counts, metadata.",
    info_opts, "model"};

static void print_shape(const fed_shape *s) {
    printf("(");
    for (int d = 0; d < s->ndim; d++) printf(d ? ", %zu" : "%zu", s->d[d]);
    printf(")");
}

static fed_err run_info(const void *cfg) {
    const info_cfg *c = cfg;
    if (!c->model) return fed_errorf(FED_EINVAL, "a model file is required (fedtune info FILE)");
    fed_model *m = NULL;
    fed_meta *meta = NULL;
    fed_err err = prep_load_model(&m, &meta, c->model, c->arch, c->allow_extra != 0);
    if (err) return err;
    const fed_arch *a = fed_model_arch(m);
    printf("model %s\n", c->model);
    printf("parameters %zu, trainable %zu, frozen %zu\n", fed_model_num_params(m),
           fed_model_num_trainable(m), fed_model_num_params(m) - fed_model_num_trainable(m));
    fed_shape in = fed_arch_input_shape(a);
    printf("input ");
    print_shape(&in);
    printf(" -> output %zu\n", fed_model_output_size(m));
    if (fed_arch_is_lm(a))
        printf("language model: %zu positions each predict the next of %zu tokens (next-token "
               "loss)\n",
               in.d[0], fed_arch_layer(a, fed_arch_num_layers(a) - 1)->out);
    printf("\nlayers:\n");
    for (size_t i = 0; i < fed_arch_num_layers(a); i++) {
        const fed_layer_spec *l = fed_arch_layer(a, i);
        fed_shape o = fed_arch_shape_at(a, i + 1);
        printf("  %2zu  %-14s", i, fed_layer_kind_name(l->kind));
        switch (l->kind) {
        case FED_LAYER_LINEAR:
            printf(" out %-6zu", l->out);
            break;
        case FED_LAYER_CONV2D:
            printf(" out %zu k %zu stride %zu pad %zu", l->out, l->k, l->stride, l->pad);
            break;
        case FED_LAYER_MAXPOOL2D:
        case FED_LAYER_AVGPOOL2D:
            printf(" k %zu stride %zu", l->k, l->stride);
            break;
        case FED_LAYER_DROPOUT:
            printf(" p %g", (double)l->p);
            break;
        case FED_LAYER_EMBEDDING:
            printf(" vocab %zu dim %zu%s", l->vocab, l->dim, l->padded ? " padded" : "");
            break;
        case FED_LAYER_ATTENTION:
            printf(" heads %zu out %zu%s", l->heads, l->out, l->causal ? " causal" : "");
            break;
        case FED_LAYER_POSITIONS:
            printf(" %s", l->pos == FED_POS_LEARNED ? "learned" : "sinusoidal");
            break;
        case FED_LAYER_RESIDUAL:
            printf(" %s", l->proj ? "proj" : "identity");
            break;
        case FED_LAYER_LMHEAD:
            printf(" tied to %s (vocab %zu)", l->tie, l->out);
            break;
        default:
            break;
        }
        if (l->lora_rank && l->kind != FED_LAYER_RESIDUAL)
            printf(" lora r%zu alpha %g", l->lora_rank, (double)l->lora_alpha);
        char idx[24];
        snprintf(idx, sizeof idx, "%zu", i);
        if (strcmp(l->name, idx) != 0) printf(" [%s]", l->name);
        printf("  -> ");
        print_shape(&o);
        printf("\n");
    }
    if (c->tensors) {
        printf("\ntensors:\n");
        for (size_t i = 0; i < fed_model_num_tensors(m); i++) {
            const fed_tensor *t = fed_model_tensor(m, i);
            char shape[96];
            int off = snprintf(shape, sizeof shape, "[");
            for (int d = 0; d < t->ndim && off > 0 && (size_t)off < sizeof shape; d++)
                off += snprintf(shape + off, sizeof shape - (size_t)off, d ? ", %zu" : "%zu",
                                t->shape[d]);
            if (off > 0 && (size_t)off < sizeof shape)
                snprintf(shape + off, sizeof shape - (size_t)off, "]");
            printf("  %-16s %-20s %10zu  %s\n", t->name, shape, t->numel,
                   t->trainable ? "trainable" : "frozen");
        }
    }
    printf("\nmetadata:\n");
    for (size_t i = 0; i < fed_meta_count(meta); i++) {
        const char *k = fed_meta_key(meta, i), *v = fed_meta_value(meta, i);
        size_t len = strlen(v);
        if (len > 200)
            printf("  %s = %.200s... (%zu bytes)\n", k, v, len);
        else
            printf("  %s = %s\n", k, v);
    }
    fed_meta_destroy(&meta);
    fed_model_destroy(&m);
    return FED_OK;
}

int cmd_info(int argc, char **argv) {
    info_cfg c;
    return cli_run(&info_table, &c, sizeof c, argc, argv, run_info);
}

/* ---- merge ----------------------------------------------------------------------------- */

typedef struct merge_cfg {
    const char *model; /* model file with adapters */
    const char *out;   /* model file to write */
} merge_cfg;

#define F(field) offsetof(merge_cfg, field)
static const opt_spec merge_opts[] = {
    {"model", OPT_STRING, NULL, 1, 0, NULL, F(model), "model file with LoRA adapters"},
    {"out", OPT_STRING, NULL, 1, 0, NULL, F(out), "model file to write, adapters merged"},
    {NULL, OPT_INT, NULL, 0, 0, NULL, 0, NULL},
};
#undef F

static const opt_table merge_table = {
    "merge",
    "Fold the LoRA adapters of a model into its weights (W += alpha/rank * B A): the same "
    "function without adapters, as plain tensors any tool can load.",
    merge_opts, NULL};

static fed_err run_merge(const void *cfg) {
    const merge_cfg *c = cfg;
    if (!c->model) return fed_errorf(FED_EINVAL, "--model is required");
    if (!c->out) return fed_errorf(FED_EINVAL, "--out is required");
    fed_model *m = NULL, *g = NULL;
    fed_meta *meta = NULL;
    fed_err err = prep_load_model(&m, &meta, c->model, NULL, false);
    if (err) return err;
    size_t adapters = fed_arch_num_lora(fed_model_arch(m));
    if (!adapters) err = fed_errorf(FED_EINVAL, "%s has no LoRA adapters to merge", c->model);
    if (!err) err = fed_model_merge_lora(&g, m);
    if (!err) err = fed_model_save(g, c->out, meta);
    if (!err)
        printf("merge: %zu adapters folded; wrote %s (%zu parameters, %zu before)\n", adapters,
               c->out, fed_model_num_params(g), fed_model_num_params(m));
    fed_model_destroy(&g);
    fed_model_destroy(&m);
    fed_meta_destroy(&meta);
    return err;
}

int cmd_merge(int argc, char **argv) {
    merge_cfg c;
    return cli_run(&merge_table, &c, sizeof c, argc, argv, run_merge);
}
