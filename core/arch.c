/* Architecture specs: JSON parsing with field-level errors, shape inference, presets and
 * the canonical JSON writer. The only file of core/ that knows cJSON besides the model
 * file code. Nothing here owns parameters: see model.c. */
#include "core/arch.h"
#include "core/alloc.h"
#include "core/json.h"
#include "core/kernels.h"

#include <cJSON.h>
#include <fnmatch.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fed_arch {
    fed_shape input;        /* shape of one example entering layer 0 */
    size_t nlayers;         /* entries in layers */
    fed_layer_spec *layers; /* (nlayers) */
    fed_shape *shapes;      /* (nlayers + 1): shape entering layer i; last = output */
    size_t nparams;         /* parameters of all layers */
};

static const struct {
    fed_layer_kind kind;
    const char *name;
} kind_names[] = {
    {FED_LAYER_LINEAR, "linear"},
    {FED_LAYER_CONV2D, "conv2d"},
    {FED_LAYER_MAXPOOL2D, "maxpool2d"},
    {FED_LAYER_AVGPOOL2D, "avgpool2d"},
    {FED_LAYER_GLOBALAVGPOOL, "globalavgpool"},
    {FED_LAYER_FLATTEN, "flatten"},
    {FED_LAYER_RELU, "relu"},
    {FED_LAYER_GELU, "gelu"},
    {FED_LAYER_TANH, "tanh"},
    {FED_LAYER_SIGMOID, "sigmoid"},
    {FED_LAYER_DROPOUT, "dropout"},
    {FED_LAYER_LAYERNORM, "layernorm"},
    {FED_LAYER_EMBEDDING, "embedding"},
    {FED_LAYER_POSITIONS, "positions"},
    {FED_LAYER_ATTENTION, "attention"},
    {FED_LAYER_RESIDUAL, "residual"},
    {FED_LAYER_RESIDUAL_END, "residual-end"},
    {FED_LAYER_MEANPOOL, "meanpool"},
    {FED_LAYER_L2NORM, "l2norm"},
    {FED_LAYER_LMHEAD, "lmhead"},
};

/* Most layers of an architecture once residual blocks are unrolled, and how deep
 * blocks nest: bounds on what a spec may make the parser build. */
#define MAX_LAYERS 4096
#define MAX_DEPTH  8
/* Longest tensor name: FED_TENSOR_NAME_MAX of core/model.h. */
#define FED_TENSOR_NAME_MAX_ARCH 64

static const char *const init_names[] = {"kaiming", "xavier", "torch", "normal", "gpt2"};

static const struct {
    const char *name;
    const char *json;
} presets[] = {
    /* McMahan et al. 2017, "2NN": 199,210 parameters. */
    {"fedavg-2nn", "{\"input\":[784],\"layers\":["
                   "{\"type\":\"linear\",\"out\":200},{\"type\":\"relu\"},"
                   "{\"type\":\"linear\",\"out\":200},{\"type\":\"relu\"},"
                   "{\"type\":\"linear\",\"out\":10}]}"},
    /* McMahan et al. 2017, "CNN": 1,663,370 parameters. */
    {"fedavg-cnn", "{\"input\":[1,28,28],\"layers\":["
                   "{\"type\":\"conv2d\",\"out\":32,\"k\":5,\"pad\":2},{\"type\":\"relu\"},"
                   "{\"type\":\"maxpool2d\",\"k\":2},"
                   "{\"type\":\"conv2d\",\"out\":64,\"k\":5,\"pad\":2},{\"type\":\"relu\"},"
                   "{\"type\":\"maxpool2d\",\"k\":2},{\"type\":\"flatten\"},"
                   "{\"type\":\"linear\",\"out\":512},{\"type\":\"relu\"},"
                   "{\"type\":\"linear\",\"out\":10}]}"},
};

static const char *const preset_names[] = {"fedavg-2nn", "fedavg-cnn", NULL};

const char *const *fed_arch_presets(void) {
    return preset_names;
}

const char *fed_layer_kind_name(fed_layer_kind kind) {
    for (size_t i = 0; i < sizeof kind_names / sizeof kind_names[0]; i++)
        if (kind_names[i].kind == kind) return kind_names[i].name;
    return "?";
}

size_t fed_shape_numel(const fed_shape *s) {
    size_t n = 1;
    for (int i = 0; i < s->ndim; i++) n *= s->d[i];
    return n;
}

/* ---- parsing ---------------------------------------------------------------------- */

/* Where an error is: "layer 3 (conv2d)" or "input". */
typedef struct where {
    char text[128];
} where;

static where at_layer(const char *path, const char *type) {
    where w;
    snprintf(w.text, sizeof w.text, "layer %s (%s)", path, type);
    return w;
}

/* An optional integer field in [lo, hi]; def when absent. */
static fed_err get_size(const cJSON *obj, const where *w, const char *key, size_t lo, size_t hi,
                        bool required, size_t def, size_t *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v) {
        if (required) return fed_errorf(FED_EFORMAT, "%s: missing field \"%s\"", w->text, key);
        *out = def;
        return FED_OK;
    }
    double d = cJSON_IsNumber(v) ? v->valuedouble : -1.0;
    if (!cJSON_IsNumber(v) || d != floor(d) || d < (double)lo || d > (double)hi)
        return fed_errorf(FED_EFORMAT, "%s: field \"%s\": must be an integer in [%zu, %zu]",
                          w->text, key, lo, hi);
    *out = (size_t)d;
    return FED_OK;
}

static fed_err get_float(const cJSON *obj, const where *w, const char *key, double lo, double hi,
                         bool hi_open, float def, float *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v) {
        *out = def;
        return FED_OK;
    }
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= lo) ||
        (hi_open ? !(v->valuedouble < hi) : !(v->valuedouble <= hi)))
        return fed_errorf(FED_EFORMAT, "%s: field \"%s\": must be a number in [%g, %g%c", w->text,
                          key, lo, hi, hi_open ? ')' : ']');
    *out = (float)v->valuedouble;
    return FED_OK;
}

static fed_err get_bool(const cJSON *obj, const where *w, const char *key, bool def, bool *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v) {
        *out = def;
        return FED_OK;
    }
    if (!cJSON_IsBool(v))
        return fed_errorf(FED_EFORMAT, "%s: field \"%s\": must be true or false", w->text, key);
    *out = cJSON_IsTrue(v);
    return FED_OK;
}

static fed_err get_init(const cJSON *obj, const where *w, fed_init def, fed_init *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, "init");
    if (!v) {
        *out = def;
        return FED_OK;
    }
    if (cJSON_IsString(v)) {
        for (size_t i = 0; i < sizeof init_names / sizeof init_names[0]; i++) {
            if (strcmp(v->valuestring, init_names[i]) == 0) {
                *out = (fed_init)i;
                return FED_OK;
            }
        }
    }
    return fed_errorf(
        FED_EFORMAT,
        "%s: field \"init\": must be \"kaiming\", \"xavier\", \"torch\", \"normal\" or \"gpt2\"",
        w->text);
}

/* Rejects keys the layer kind does not know, so typos are never silently ignored. */
static fed_err check_keys(const cJSON *obj, const where *w, const char *const *allowed) {
    for (const cJSON *it = obj->child; it; it = it->next) {
        bool ok = strcmp(it->string, "type") == 0;
        for (const char *const *k = allowed; !ok && *k; k++) ok = strcmp(it->string, *k) == 0;
        if (!ok) return fed_errorf(FED_EFORMAT, "%s: unknown field \"%s\"", w->text, it->string);
    }
    return FED_OK;
}

/* The layer's "name" (or its path) into ls->name. */
static fed_err get_name(const cJSON *obj, const where *w, const char *path, fed_layer_spec *ls) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, "name");
    const char *name = path;
    if (v) {
        name = cJSON_IsString(v) ? v->valuestring : "";
        size_t n = strlen(name);
        if (n == 0 || n >= FED_LAYER_NAME_MAX ||
            strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") != n)
            return fed_errorf(FED_EFORMAT,
                              "%s: field \"name\": must be 1 to %d characters of [A-Za-z0-9_.-]",
                              w->text, FED_LAYER_NAME_MAX - 1);
    }
    size_t n = strlen(name);
    if (n >= FED_LAYER_NAME_MAX)
        return fed_errorf(FED_EFORMAT, "%s: name \"%s\" is longer than %d characters", w->text,
                          name, FED_LAYER_NAME_MAX - 1);
    memcpy(ls->name, name, n + 1);
    return FED_OK;
}

/* The weights a kind takes adapters on, as "on" names them. */
static const struct {
    fed_layer_kind kind;
    const char *on;
    unsigned bit;
    const char *suffix; /* of the weight tensor */
} lora_weights[] = {
    {FED_LAYER_LINEAR, "weight", FED_LORA_MAIN, "weight"},
    {FED_LAYER_CONV2D, "weight", FED_LORA_MAIN, "weight"},
    {FED_LAYER_ATTENTION, "qkv", FED_LORA_MAIN, "qkv.weight"},
    {FED_LAYER_ATTENTION, "out", FED_LORA_SECOND, "out.weight"},
    {FED_LAYER_RESIDUAL_END, "proj", FED_LORA_SECOND, "proj.weight"},
};

/* A convolution takes adapters when it is a 1x1 one: a linear map at every pixel. */
static bool conv_takes_lora(const fed_layer_spec *ls) {
    return ls->k == 1 && ls->stride == 1 && ls->pad == 0;
}

/* A kind as lora_weights lists it: a residual block's adapters belong to its end. */
static fed_layer_kind lora_kind(fed_layer_kind k) {
    return k == FED_LAYER_RESIDUAL ? FED_LAYER_RESIDUAL_END : k;
}

/* The optional "lora" object of a linear, attention or residual layer. */
static fed_err get_lora(const cJSON *obj, const where *w, fed_layer_spec *ls) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, "lora");
    if (!v) return FED_OK;
    where lw;
    snprintf(lw.text, sizeof lw.text, "%.100s: field \"lora\"", w->text);
    const char *at = lw.text;
    if (!cJSON_IsObject(v)) return fed_errorf(FED_EFORMAT, "%s: must be an object", at);
    static const char *const keys[] = {"rank", "alpha", "on", NULL};
    fed_err err;
    if ((err = check_keys(v, &lw, keys)) ||
        (err = get_size(v, &lw, "rank", 1, FED_LORA_MAX_RANK, true, 0, &ls->lora_rank)) ||
        (err = get_float(v, &lw, "alpha", 1e-6, 1e6, false, (float)ls->lora_rank, &ls->lora_alpha)))
        return err;
    fed_layer_kind k = lora_kind(ls->kind);
    const cJSON *on = cJSON_GetObjectItemCaseSensitive(v, "on");
    for (size_t i = 0; i < sizeof lora_weights / sizeof lora_weights[0]; i++)
        if (lora_weights[i].kind == k && !on) ls->lora_on |= lora_weights[i].bit;
    if (!on) return FED_OK;
    if (!cJSON_IsArray(on) || cJSON_GetArraySize(on) < 1)
        return fed_errorf(FED_EFORMAT, "%s: field \"on\": must be a non-empty array", at);
    for (const cJSON *it = on->child; it; it = it->next) {
        size_t i, n = sizeof lora_weights / sizeof lora_weights[0];
        for (i = 0; i < n; i++)
            if (lora_weights[i].kind == k && cJSON_IsString(it) &&
                strcmp(it->valuestring, lora_weights[i].on) == 0)
                break;
        if (i == n)
            return fed_errorf(FED_EFORMAT,
                              "%s: field \"on\": \"%.40s\" is not a weight of this layer", at,
                              cJSON_IsString(it) ? it->valuestring : "?");
        ls->lora_on |= lora_weights[i].bit;
    }
    return FED_OK;
}

static fed_err parse_layer(const cJSON *obj, const char *path, fed_layer_spec *ls) {
    where w = at_layer(path, "?");
    if (!cJSON_IsObject(obj)) return fed_errorf(FED_EFORMAT, "%s: must be an object", w.text);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(obj, "type");
    if (!cJSON_IsString(t))
        return fed_errorf(FED_EFORMAT, "%s: missing string field \"type\"", w.text);
    size_t nk = sizeof kind_names / sizeof kind_names[0], ki;
    for (ki = 0; ki < nk; ki++)
        if (kind_names[ki].kind != FED_LAYER_RESIDUAL_END &&
            strcmp(t->valuestring, kind_names[ki].name) == 0)
            break;
    if (ki == nk)
        return fed_errorf(FED_EFORMAT, "layer %s: unknown type \"%.40s\"", path, t->valuestring);
    memset(ls, 0, sizeof *ls);
    ls->kind = kind_names[ki].kind;
    w = at_layer(path, kind_names[ki].name);
    fed_err nerr = get_name(obj, &w, path, ls);
    if (nerr) return nerr;

    fed_err err = FED_OK;
    const size_t MAXD = FED_MAX_DIM_SIZE;
    switch (ls->kind) {
    case FED_LAYER_LINEAR: {
        static const char *const keys[] = {"out", "bias", "init", "name", "lora", NULL};
        if ((err = check_keys(obj, &w, keys)) ||
            (err = get_size(obj, &w, "out", 1, MAXD, true, 0, &ls->out)) ||
            (err = get_bool(obj, &w, "bias", true, &ls->bias)) ||
            (err = get_init(obj, &w, FED_INIT_KAIMING, &ls->init)) || (err = get_lora(obj, &w, ls)))
            return err;
        break;
    }
    case FED_LAYER_CONV2D: {
        static const char *const keys[] = {"out",  "k",    "stride", "pad", "bias",
                                           "init", "name", "lora",   NULL};
        if ((err = check_keys(obj, &w, keys)) ||
            (err = get_size(obj, &w, "out", 1, MAXD, true, 0, &ls->out)) ||
            (err = get_size(obj, &w, "k", 1, 64, true, 0, &ls->k)) ||
            (err = get_size(obj, &w, "stride", 1, 64, false, 1, &ls->stride)) ||
            (err = get_size(obj, &w, "pad", 0, 64, false, 0, &ls->pad)) ||
            (err = get_bool(obj, &w, "bias", true, &ls->bias)) ||
            (err = get_init(obj, &w, FED_INIT_KAIMING, &ls->init)) || (err = get_lora(obj, &w, ls)))
            return err;
        if (ls->lora_rank && !conv_takes_lora(ls))
            return fed_errorf(FED_EFORMAT,
                              "%s: field \"lora\": adapters need a 1x1 convolution (k 1, "
                              "stride 1, pad 0)",
                              w.text);
        break;
    }
    case FED_LAYER_MAXPOOL2D:
    case FED_LAYER_AVGPOOL2D: {
        static const char *const keys[] = {"k", "stride", "name", NULL};
        if ((err = check_keys(obj, &w, keys)) ||
            (err = get_size(obj, &w, "k", 1, 64, true, 0, &ls->k)) ||
            (err = get_size(obj, &w, "stride", 1, 64, false, ls->k, &ls->stride)))
            return err;
        break;
    }
    case FED_LAYER_DROPOUT: {
        static const char *const keys[] = {"p", "name", NULL};
        if ((err = check_keys(obj, &w, keys)) ||
            (err = get_float(obj, &w, "p", 0.0, 1.0, true, 0.5f, &ls->p)))
            return err;
        break;
    }
    case FED_LAYER_LAYERNORM: {
        static const char *const keys[] = {"eps", "name", NULL};
        if ((err = check_keys(obj, &w, keys)) ||
            (err = get_float(obj, &w, "eps", 1e-12, 1.0, false, 1e-5f, &ls->eps)))
            return err;
        break;
    }
    case FED_LAYER_EMBEDDING: {
        static const char *const keys[] = {"vocab", "dim", "init", "pad", "name", NULL};
        if ((err = check_keys(obj, &w, keys)) ||
            (err = get_size(obj, &w, "vocab", 1, (size_t)1 << 24, true, 0, &ls->vocab)) ||
            (err = get_size(obj, &w, "dim", 1, MAXD, true, 0, &ls->dim)) ||
            (err = get_init(obj, &w, FED_INIT_NORMAL, &ls->init)) ||
            (err = get_bool(obj, &w, "pad", false, &ls->padded)))
            return err;
        break;
    }
    case FED_LAYER_POSITIONS: {
        static const char *const keys[] = {"kind", "name", NULL};
        if ((err = check_keys(obj, &w, keys))) return err;
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, "kind");
        if (!v || (cJSON_IsString(v) && strcmp(v->valuestring, "sinusoidal") == 0)) {
            ls->pos = FED_POS_SINUSOIDAL;
        } else if (cJSON_IsString(v) && strcmp(v->valuestring, "learned") == 0) {
            ls->pos = FED_POS_LEARNED;
            ls->init = FED_INIT_NORMAL;
        } else {
            return fed_errorf(FED_EFORMAT,
                              "%s: field \"kind\": must be \"sinusoidal\" or \"learned\"", w.text);
        }
        break;
    }
    case FED_LAYER_ATTENTION: {
        static const char *const keys[] = {"heads", "out",  "causal", "bias",
                                           "init",  "name", "lora",   NULL};
        if ((err = check_keys(obj, &w, keys)) ||
            (err = get_size(obj, &w, "heads", 1, 4096, true, 0, &ls->heads)) ||
            (err = get_size(obj, &w, "out", 0, MAXD, false, 0, &ls->out)) ||
            (err = get_bool(obj, &w, "causal", false, &ls->causal)) ||
            (err = get_bool(obj, &w, "bias", true, &ls->bias)) ||
            (err = get_init(obj, &w, FED_INIT_XAVIER, &ls->init)) || (err = get_lora(obj, &w, ls)))
            return err;
        break;
    }
    case FED_LAYER_RESIDUAL: {
        static const char *const keys[] = {"layers", "proj", "init", "name", "lora", NULL};
        if ((err = check_keys(obj, &w, keys)) ||
            (err = get_bool(obj, &w, "proj", false, &ls->proj)) ||
            (err = get_init(obj, &w, FED_INIT_XAVIER, &ls->init)) || (err = get_lora(obj, &w, ls)))
            return err;
        if (ls->lora_rank && !ls->proj)
            return fed_errorf(FED_EFORMAT, "%s: field \"lora\": the block has no projection",
                              w.text);
        ls->bias = true;
        break;
    }
    case FED_LAYER_L2NORM: {
        static const char *const keys[] = {"eps", "name", NULL};
        if ((err = check_keys(obj, &w, keys)) ||
            (err = get_float(obj, &w, "eps", 1e-30, 1.0, false, 1e-12f, &ls->eps)))
            return err;
        break;
    }
    case FED_LAYER_LMHEAD: {
        static const char *const keys[] = {"tie", "name", NULL};
        if ((err = check_keys(obj, &w, keys))) return err;
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, "tie");
        size_t n = cJSON_IsString(v) ? strlen(v->valuestring) : 0;
        if (n == 0 || n >= FED_LAYER_NAME_MAX)
            return fed_errorf(FED_EFORMAT,
                              "%s: field \"tie\": must be the name of an embedding layer (1 to "
                              "%d characters)",
                              w.text, FED_LAYER_NAME_MAX - 1);
        memcpy(ls->tie, v->valuestring, n + 1);
        break;
    }
    case FED_LAYER_RESIDUAL_END:
        break;
    case FED_LAYER_GLOBALAVGPOOL:
    case FED_LAYER_FLATTEN:
    case FED_LAYER_RELU:
    case FED_LAYER_GELU:
    case FED_LAYER_TANH:
    case FED_LAYER_SIGMOID:
    case FED_LAYER_MEANPOOL: {
        static const char *const keys[] = {"name", NULL};
        if ((err = check_keys(obj, &w, keys))) return err;
        break;
    }
    }
    return FED_OK;
}

static fed_err parse_shape(const cJSON *arr, const char *what, fed_shape *s) {
    int n = cJSON_IsArray(arr) ? cJSON_GetArraySize(arr) : 0;
    if (n < 1 || n > FED_MAX_DIMS)
        return fed_errorf(FED_EFORMAT, "%s: must be an array of 1 to %d positive integers", what,
                          FED_MAX_DIMS);
    s->ndim = n;
    size_t total = 1;
    for (int i = 0; i < n; i++) {
        const cJSON *v = cJSON_GetArrayItem(arr, i);
        double d = cJSON_IsNumber(v) ? v->valuedouble : 0.0;
        if (d != floor(d) || d < 1.0 || d > (double)FED_MAX_DIM_SIZE)
            return fed_errorf(FED_EFORMAT, "%s: dimension %d must be an integer in [1, %zu]", what,
                              i, FED_MAX_DIM_SIZE);
        s->d[i] = (size_t)d;
        total *= s->d[i];
        if (total > FED_MAX_DIM_SIZE)
            return fed_errorf(FED_EFORMAT, "%s: more than %zu elements per example", what,
                              FED_MAX_DIM_SIZE);
    }
    return FED_OK;
}

/* Output shape of layer i for input in (the residual end also sees its block's input
 * skip), or an error naming the layer. */
static fed_err infer_shape(fed_layer_spec *ls, const fed_shape *in, const fed_shape *skip,
                           fed_shape *out) {
    where w = at_layer(ls->name, fed_layer_kind_name(ls->kind));
    *out = *in;
    size_t last = in->d[in->ndim - 1];
    switch (ls->kind) {
    case FED_LAYER_LINEAR:
    case FED_LAYER_LMHEAD: /* out: the tied embedding's vocabulary (tie_to) */
        out->d[in->ndim - 1] = ls->out;
        break;
    case FED_LAYER_CONV2D:
    case FED_LAYER_MAXPOOL2D:
    case FED_LAYER_AVGPOOL2D:
    case FED_LAYER_GLOBALAVGPOOL: {
        if (in->ndim != 3)
            return fed_errorf(FED_ESHAPE, "%s: needs a (C, H, W) input, got %d dimension(s)",
                              w.text, in->ndim);
        size_t C = in->d[0], H = in->d[1], W = in->d[2];
        if (ls->kind == FED_LAYER_GLOBALAVGPOOL) {
            out->d[1] = out->d[2] = 1;
            break;
        }
        size_t pad = ls->kind == FED_LAYER_CONV2D ? ls->pad : 0;
        fed_conv_geom g;
        if (!fed_conv_geom_init(&g, C, H, W, ls->kind == FED_LAYER_CONV2D ? ls->out : C, ls->k,
                                ls->stride, pad))
            return fed_errorf(FED_ESHAPE,
                              "%s: window %zu (padding %zu) does not fit a %zux%zu input", w.text,
                              ls->k, pad, H, W);
        out->d[0] = g.OC;
        out->d[1] = g.OH;
        out->d[2] = g.OW;
        break;
    }
    case FED_LAYER_FLATTEN:
        out->ndim = 1;
        out->d[0] = fed_shape_numel(in);
        out->d[1] = out->d[2] = 0;
        break;
    case FED_LAYER_EMBEDDING:
        if (in->ndim != 1)
            return fed_errorf(FED_ESHAPE, "%s: needs a (T) input of token ids, got %d dimensions",
                              w.text, in->ndim);
        out->ndim = 2;
        out->d[1] = ls->dim;
        break;
    case FED_LAYER_POSITIONS:
    case FED_LAYER_ATTENTION:
    case FED_LAYER_MEANPOOL:
        if (in->ndim != 2)
            return fed_errorf(FED_ESHAPE, "%s: needs a (T, D) sequence, got %d dimension(s)",
                              w.text, in->ndim);
        if (ls->kind == FED_LAYER_POSITIONS && ls->pos == FED_POS_SINUSOIDAL &&
            (last % 2 || last < 4))
            return fed_errorf(FED_ESHAPE,
                              "%s: a sinusoidal signal needs an even width >= 4, got %zu", w.text,
                              last);
        if (ls->kind == FED_LAYER_ATTENTION) {
            if (last % ls->heads)
                return fed_errorf(FED_ESHAPE, "%s: %zu heads do not divide the width %zu", w.text,
                                  ls->heads, last);
            if (ls->out == 0) ls->out = last;
            out->d[1] = ls->out;
        }
        if (ls->kind == FED_LAYER_MEANPOOL) {
            out->ndim = 1;
            out->d[0] = last;
            out->d[1] = 0;
        }
        break;
    case FED_LAYER_RESIDUAL_END:
        if (skip->ndim != in->ndim || (!ls->proj && last != skip->d[skip->ndim - 1]))
            return fed_errorf(FED_ESHAPE,
                              "%s: the block maps width %zu to %zu; add \"proj\": true for a "
                              "linear skip path",
                              w.text, skip->d[skip->ndim - 1], last);
        for (int i = 0; i + 1 < in->ndim; i++)
            if (in->d[i] != skip->d[i])
                return fed_errorf(FED_ESHAPE, "%s: the block changes dimension %d (%zu -> %zu)",
                                  w.text, i, skip->d[i], in->d[i]);
        break;
    case FED_LAYER_RESIDUAL:
    case FED_LAYER_LAYERNORM:
    case FED_LAYER_RELU:
    case FED_LAYER_GELU:
    case FED_LAYER_TANH:
    case FED_LAYER_SIGMOID:
    case FED_LAYER_DROPOUT:
    case FED_LAYER_L2NORM:
        break;
    }
    size_t prod = 1;
    for (int i = 0; i < out->ndim; i++) {
        if (out->d[i] == 0 || out->d[i] > FED_MAX_DIM_SIZE || prod > FED_MAX_DIM_SIZE / out->d[i])
            return fed_errorf(FED_ESHAPE, "%s: output has more than %zu elements per example",
                              w.text, FED_MAX_DIM_SIZE);
        prod *= out->d[i];
    }
    return FED_OK;
}

/* a*b + c, or SIZE_MAX on overflow. */
static size_t muladd(size_t a, size_t b, size_t c) {
    size_t p;
    return fed_mul_ok(a, b, &p) && p <= SIZE_MAX - c ? p + c : SIZE_MAX;
}

/* Parameters layer ls owns given its input shape (and its block's input, for a residual
 * end); SIZE_MAX if the count overflows. */
static size_t layer_params(const fed_layer_spec *ls, const fed_shape *in, const fed_shape *skip) {
    size_t last = in->d[in->ndim - 1], w = 0, n;
    switch (ls->kind) {
    case FED_LAYER_LINEAR:
        if (!fed_mul_ok(ls->out, last, &w)) return SIZE_MAX;
        return w + (ls->bias ? ls->out : 0);
    case FED_LAYER_CONV2D:
        if (!fed_mul_ok(ls->out, in->d[0] * ls->k * ls->k, &w)) return SIZE_MAX;
        return w + (ls->bias ? ls->out : 0);
    case FED_LAYER_LAYERNORM:
        return 2 * last;
    case FED_LAYER_EMBEDDING:
        return fed_mul_ok(ls->vocab, ls->dim, &n) ? n : SIZE_MAX;
    case FED_LAYER_POSITIONS:
        return ls->pos == FED_POS_LEARNED ? muladd(in->d[0], last, 0) : 0;
    case FED_LAYER_ATTENTION: {
        size_t qkv = muladd(3 * last, last, ls->bias ? 3 * last : 0);
        size_t o = muladd(ls->out, last, ls->bias ? ls->out : 0);
        return qkv == SIZE_MAX || o == SIZE_MAX || qkv > SIZE_MAX - o ? SIZE_MAX : qkv + o;
    }
    case FED_LAYER_RESIDUAL_END:
        return ls->proj ? muladd(last, skip->d[skip->ndim - 1], last) : 0;
    default:
        return 0;
    }
}

/* Parameters of the layer's adapters: r * (in + out) per adapted weight. */
static size_t lora_params(const fed_layer_spec *ls, const fed_shape *in, const fed_shape *skip) {
    if (!ls->lora_rank || ls->kind == FED_LAYER_RESIDUAL) return 0;
    size_t last = in->d[in->ndim - 1], r = ls->lora_rank, n = 0;
    if (ls->kind == FED_LAYER_LINEAR) n = muladd(r, last + ls->out, 0);
    if (ls->kind == FED_LAYER_CONV2D) n = muladd(r, in->d[0] + ls->out, 0);
    if (ls->kind == FED_LAYER_ATTENTION)
        n = muladd(r,
                   (ls->lora_on & FED_LORA_MAIN ? 4 * last : 0) +
                       (ls->lora_on & FED_LORA_SECOND ? last + ls->out : 0),
                   0);
    if (ls->kind == FED_LAYER_RESIDUAL_END) n = muladd(r, skip->d[skip->ndim - 1] + last, 0);
    return n;
}

/* Resolves the tie of lmhead i: an embedding before it whose width is the input's; sets
 * its tied index and its output width (the vocabulary). */
static fed_err tie_to(fed_arch *a, size_t i, const where *w) {
    fed_layer_spec *ls = &a->layers[i];
    size_t j;
    for (j = 0; j < a->nlayers; j++)
        if (a->layers[j].kind != FED_LAYER_RESIDUAL_END && strcmp(a->layers[j].name, ls->tie) == 0)
            break;
    if (j == a->nlayers)
        return fed_errorf(FED_EFORMAT, "%s: field \"tie\": no layer is named \"%s\"", w->text,
                          ls->tie);
    const fed_layer_spec *e = &a->layers[j];
    if (e->kind != FED_LAYER_EMBEDDING)
        return fed_errorf(FED_EFORMAT, "%s: field \"tie\": layer \"%s\" is %s, not an embedding",
                          w->text, ls->tie, fed_layer_kind_name(e->kind));
    if (j > i)
        return fed_errorf(FED_EFORMAT, "%s: field \"tie\": embedding \"%s\" comes after the lmhead",
                          w->text, ls->tie);
    const fed_shape *in = &a->shapes[i];
    if (in->d[in->ndim - 1] != e->dim)
        return fed_errorf(FED_ESHAPE,
                          "%s: field \"tie\": embedding \"%s\" is %zu wide, the lmhead's input "
                          "%zu",
                          w->text, ls->tie, e->dim, in->d[in->ndim - 1]);
    ls->tied = j;
    ls->out = e->vocab;
    return FED_OK;
}

/* Shape after layer i and its parameter count into a; the sequence checks need the
 * layers before i, so derive runs in order. */
static fed_err derive(fed_arch *a, size_t i, bool *seq) {
    fed_layer_spec *ls = &a->layers[i];
    where w = at_layer(ls->name, fed_layer_kind_name(ls->kind));
    fed_layer_kind k = ls->kind;
    if (*seq &&
        (k == FED_LAYER_CONV2D || k == FED_LAYER_MAXPOOL2D || k == FED_LAYER_AVGPOOL2D ||
         k == FED_LAYER_GLOBALAVGPOOL || k == FED_LAYER_FLATTEN || k == FED_LAYER_EMBEDDING))
        return fed_errorf(FED_ESHAPE,
                          "%s: cannot take a padded token sequence; pool it first (meanpool)",
                          w.text);
    if (k == FED_LAYER_EMBEDDING && ls->padded) *seq = true;
    if (k == FED_LAYER_MEANPOOL) *seq = false;
    const fed_shape *skip = k == FED_LAYER_RESIDUAL_END ? &a->shapes[ls->pair] : NULL;
    fed_err err = k == FED_LAYER_LMHEAD ? tie_to(a, i, &w) : FED_OK;
    if (err || (err = infer_shape(ls, &a->shapes[i], skip, &a->shapes[i + 1]))) return err;
    size_t np = layer_params(ls, &a->shapes[i], skip);
    size_t nl = lora_params(ls, &a->shapes[i], skip);
    np = np == SIZE_MAX || nl == SIZE_MAX || np > SIZE_MAX - nl ? SIZE_MAX : np + nl;
    if (np > FED_MAX_PARAMS || a->nparams + np > FED_MAX_PARAMS)
        return fed_errorf(FED_ERANGE, "%s: too many parameters (limit %zu in all)", w.text,
                          FED_MAX_PARAMS);
    a->nparams += np;
    return FED_OK;
}

/* Appends ls to a->layers, growing it. */
static fed_err push_layer(fed_arch *a, size_t *cap, const fed_layer_spec *ls) {
    if (a->nlayers == MAX_LAYERS)
        return fed_errorf(FED_ERANGE, "layer %s: more than %d layers in all", ls->name, MAX_LAYERS);
    if (a->nlayers == *cap) {
        size_t ncap = *cap ? 2 * *cap : 16;
        fed_layer_spec *n = fed_realloc(a->layers, ncap * sizeof *n);
        if (!n) return FED_ENOMEM;
        a->layers = n;
        *cap = ncap;
    }
    a->layers[a->nlayers++] = *ls;
    return FED_OK;
}

/* Parses the layers of arr from index first on (prefix: the enclosing block's name, or
 * NULL at the top), unrolling residual blocks into residual, children, residual end. */
static fed_err parse_list(fed_arch *a, size_t *cap, const cJSON *arr, size_t first,
                          const char *prefix, int depth) {
    size_t j = 0;
    for (const cJSON *it = arr->child; it; it = it->next, j++) {
        if (j < first) continue;
        char path[FED_LAYER_NAME_MAX + 24];
        if (prefix)
            snprintf(path, sizeof path, "%s.%zu", prefix, j - first);
        else
            snprintf(path, sizeof path, "%zu", j - first);
        fed_layer_spec ls;
        fed_err err = parse_layer(it, path, &ls);
        if (err) return err;
        if (ls.kind != FED_LAYER_RESIDUAL) {
            if ((err = push_layer(a, cap, &ls))) return err;
            continue;
        }
        const cJSON *kids = cJSON_GetObjectItemCaseSensitive(it, "layers");
        if (!cJSON_IsArray(kids) || cJSON_GetArraySize(kids) < 1)
            return fed_errorf(FED_EFORMAT,
                              "layer %s (residual): field \"layers\" must be a non-empty array",
                              path);
        if (depth == MAX_DEPTH)
            return fed_errorf(FED_EFORMAT, "layer %s (residual): blocks nest deeper than %d", path,
                              MAX_DEPTH);
        size_t open = a->nlayers;
        if ((err = push_layer(a, cap, &ls)) ||
            (err = parse_list(a, cap, kids, 0, ls.name, depth + 1)))
            return err;
        ls.kind = FED_LAYER_RESIDUAL_END;
        ls.pair = open;
        a->layers[open].pair = a->nlayers;
        if ((err = push_layer(a, cap, &ls))) return err;
    }
    return FED_OK;
}

/* Tensor names derive from layer names, so two layers may not share one. */
static fed_err check_names(const fed_arch *a) {
    for (size_t i = 0; i < a->nlayers; i++) {
        if (a->layers[i].kind == FED_LAYER_RESIDUAL_END) continue;
        for (size_t j = i + 1; j < a->nlayers; j++)
            if (a->layers[j].kind != FED_LAYER_RESIDUAL_END &&
                strcmp(a->layers[i].name, a->layers[j].name) == 0)
                return fed_errorf(FED_EFORMAT, "layer name \"%s\" is used twice",
                                  a->layers[i].name);
    }
    return FED_OK;
}

static fed_err build(fed_arch **out, const fed_shape *input, const cJSON *layers, size_t first) {
    fed_err err = FED_ENOMEM;
    size_t cap = 0;
    fed_arch *a = fed_calloc(1, sizeof *a);
    if (!a) goto fail;
    a->input = *input;
    if ((err = parse_list(a, &cap, layers, first, NULL, 0)) || (err = check_names(a))) goto fail;
    err = FED_ENOMEM;
    a->shapes = fed_calloc(a->nlayers + 1, sizeof *a->shapes);
    if (!a->shapes) goto fail;
    a->shapes[0] = *input;
    bool seq = false;
    for (size_t i = 0; i < a->nlayers; i++)
        if ((err = derive(a, i, &seq))) goto fail;
    *out = a;
    return FED_OK;
fail:
    fed_arch_destroy(&a);
    return err;
}

static fed_err parse_json(fed_arch **out, const char *text) {
    fed_err err = FED_EFORMAT;
    fed_json_hooks();
    cJSON *root = cJSON_Parse(text);
    if (!root) {
        if (fed_json_oom()) return fed_errorf(FED_ENOMEM, "out of memory parsing the architecture");
        const char *e = cJSON_GetErrorPtr();
        size_t off = e && e >= text ? (size_t)(e - text) : 0;
        return fed_errorf(FED_EFORMAT, "architecture: invalid JSON near offset %zu", off);
    }
    fed_shape input;
    if (cJSON_IsObject(root)) {
        for (const cJSON *it = root->child; it; it = it->next) {
            if (strcmp(it->string, "input") != 0 && strcmp(it->string, "layers") != 0) {
                err = fed_errorf(FED_EFORMAT, "architecture: unknown field \"%s\"", it->string);
                goto done;
            }
        }
        const cJSON *layers = cJSON_GetObjectItemCaseSensitive(root, "layers");
        if ((err = parse_shape(cJSON_GetObjectItemCaseSensitive(root, "input"),
                               "architecture: field \"input\"", &input)))
            goto done;
        if (!cJSON_IsArray(layers) || cJSON_GetArraySize(layers) < 1) {
            err =
                fed_errorf(FED_EFORMAT, "architecture: field \"layers\" must be a non-empty array");
            goto done;
        }
        err = build(out, &input, layers, 0);
    } else if (cJSON_IsArray(root)) {
        const cJSON *first = cJSON_GetArrayItem(root, 0);
        const cJSON *type =
            cJSON_IsObject(first) ? cJSON_GetObjectItemCaseSensitive(first, "type") : NULL;
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "input") != 0) {
            err = fed_errorf(
                FED_EFORMAT,
                "architecture: an array spec must start with {\"type\":\"input\",\"shape\":[...]}");
            goto done;
        }
        if ((err = parse_shape(cJSON_GetObjectItemCaseSensitive(first, "shape"),
                               "architecture: input \"shape\"", &input)))
            goto done;
        if (cJSON_GetArraySize(root) < 2) {
            err = fed_errorf(FED_EFORMAT, "architecture: no layers after the input");
            goto done;
        }
        err = build(out, &input, root, 1);
    } else {
        err = fed_errorf(FED_EFORMAT, "architecture: must be a JSON object or array");
    }
done:
    cJSON_Delete(root);
    return err;
}

fed_err fed_arch_parse(fed_arch **out, const char *spec) {
    *out = NULL;
    const char *p = spec;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    if (*p == '{' || *p == '[') return parse_json(out, spec);
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
        if (strcmp(spec, presets[i].name) == 0) return parse_json(out, presets[i].json);
    return fed_errorf(
        FED_EFORMAT,
        "architecture: \"%.40s\" is neither JSON nor a preset (fedavg-2nn, fedavg-cnn)", spec);
}

/* A copy of a with room for `extra` more layers. */
static fed_err clone_grow(fed_arch **out, const fed_arch *src, size_t extra) {
    *out = NULL;
    fed_arch *a = fed_calloc(1, sizeof *a);
    if (!a) return FED_ENOMEM;
    size_t n = src->nlayers + extra;
    a->layers = fed_mallocarray(n ? n : 1, sizeof *a->layers);
    a->shapes = fed_mallocarray(n + 1, sizeof *a->shapes);
    if (!a->layers || !a->shapes) {
        fed_arch_destroy(&a);
        return FED_ENOMEM;
    }
    a->input = src->input;
    a->nlayers = src->nlayers;
    a->nparams = src->nparams;
    memcpy(a->layers, src->layers, src->nlayers * sizeof *a->layers);
    memcpy(a->shapes, src->shapes, (src->nlayers + 1) * sizeof *a->shapes);
    *out = a;
    return FED_OK;
}

fed_err fed_arch_clone(fed_arch **out, const fed_arch *src) {
    return clone_grow(out, src, 0);
}

/* The layer index of the head fed_arch_new_head replaces, or nlayers when it appends
 * one (a sentence encoder); FED_EINVAL when there is none. */
static fed_err find_head(const fed_arch *a, size_t *head) {
    if (a->layers[a->nlayers - 1].kind == FED_LAYER_LMHEAD)
        return fed_errorf(FED_EINVAL,
                          "new head: the model ends in an lmhead tied to embedding "
                          "\"%s\" (a language model has no class head to replace)",
                          a->layers[a->nlayers - 1].tie);
    if (a->layers[a->nlayers - 1].kind == FED_LAYER_L2NORM) {
        *head = a->nlayers;
        return FED_OK;
    }
    size_t h = a->nlayers;
    for (size_t i = a->nlayers; i-- > 0;) {
        if (a->layers[i].kind == FED_LAYER_LINEAR) {
            h = i;
            break;
        }
    }
    if (h == a->nlayers) return fed_errorf(FED_EINVAL, "new head: the model has no linear layer");
    for (size_t i = h + 1; i < a->nlayers; i++) {
        fed_layer_kind k = a->layers[i].kind;
        if (k != FED_LAYER_RELU && k != FED_LAYER_GELU && k != FED_LAYER_TANH &&
            k != FED_LAYER_SIGMOID && k != FED_LAYER_DROPOUT && k != FED_LAYER_FLATTEN)
            return fed_errorf(FED_EINVAL,
                              "new head: layer %zu (%s) follows the last linear layer %zu", i,
                              fed_layer_kind_name(k), h);
    }
    *head = h;
    return FED_OK;
}

fed_err fed_arch_new_head(fed_arch **out, const fed_arch *a, size_t classes, size_t *head) {
    *out = NULL;
    size_t h = 0;
    fed_err err = find_head(a, &h);
    if (err) return err;
    if (classes < 1 || classes > FED_MAX_PARAMS)
        return fed_errorf(FED_EINVAL, "new head: %zu classes", classes);
    fed_arch *b;
    if ((err = clone_grow(&b, a, h == a->nlayers))) return err;
    if (h == b->nlayers) {
        fed_layer_spec *ls = &b->layers[b->nlayers++];
        memset(ls, 0, sizeof *ls);
        ls->kind = FED_LAYER_LINEAR;
        ls->bias = true;
        ls->init = FED_INIT_KAIMING;
        snprintf(ls->name, sizeof ls->name, "head");
        if ((err = check_names(b))) {
            fed_arch_destroy(&b);
            return err;
        }
    }
    b->layers[h].out = classes;
    b->nparams = 0;
    bool seq = false;
    for (size_t i = 0; i < b->nlayers && !err; i++) {
        if ((err = derive(b, i, &seq)) == FED_ERANGE)
            err = fed_errorf(FED_ERANGE, "new head: %zu classes make too many parameters", classes);
    }
    if (err) {
        fed_arch_destroy(&b);
        return err;
    }
    if (head) *head = h;
    *out = b;
    return FED_OK;
}

/* Re-derives every shape and the parameter count of a. */
static fed_err rederive(fed_arch *a) {
    a->nparams = 0;
    bool seq = false;
    for (size_t i = 0; i < a->nlayers; i++) {
        fed_err err = derive(a, i, &seq);
        if (err) return err;
    }
    return FED_OK;
}

/* Longest LoRA target pattern, NUL included. */
#define PATTERN_MAX 256

/* The comma-separated pattern of a list that starts at *pos, trimmed of spaces, into
 * pat; *pos moves past its comma (NULL after the last). False when it is empty or too
 * long. */
static bool next_pattern(const char **pos, char pat[PATTERN_MAX]) {
    const char *p = *pos, *comma = strchr(p, ',');
    size_t n = comma ? (size_t)(comma - p) : strlen(p);
    *pos = comma ? comma + 1 : NULL;
    while (n && *p == ' ') p++, n--;
    while (n && p[n - 1] == ' ') n--;
    if (n == 0 || n >= PATTERN_MAX) return false;
    memcpy(pat, p, n);
    pat[n] = '\0';
    return true;
}

/* True when glob list `targets` (NULL or "": everything) matches name. */
static bool targets_match(const char *targets, const char *name) {
    if (!targets || !*targets) return true;
    char pat[PATTERN_MAX];
    for (const char *pos = targets; pos;)
        if (next_pattern(&pos, pat) && fnmatch(pat, name, 0) == 0) return true;
    return false;
}

/* Whether weight j of lora_weights is a weight of layer i that may take adapters (not
 * of layer skip); its tensor name into name. */
static bool lora_candidate(const fed_arch *a, size_t i, size_t j, size_t skip,
                           char name[FED_TENSOR_NAME_MAX_ARCH]) {
    const fed_layer_spec *ls = &a->layers[i];
    if (lora_weights[j].kind != ls->kind || i == skip ||
        (ls->kind == FED_LAYER_RESIDUAL_END && !ls->proj) ||
        (ls->kind == FED_LAYER_CONV2D && !conv_takes_lora(ls)))
        return false;
    snprintf(name, FED_TENSOR_NAME_MAX_ARCH, "%s.%s", ls->name, lora_weights[j].suffix);
    return true;
}

#define NUM_LORA_WEIGHTS (sizeof lora_weights / sizeof lora_weights[0])

fed_err fed_arch_add_lora(fed_arch **out, const fed_arch *a, size_t rank, float alpha,
                          const char *targets, size_t skip, size_t *matched) {
    *out = NULL;
    if (matched) *matched = 0;
    if (rank < 1 || rank > FED_LORA_MAX_RANK || !(alpha > 0.0f) || !isfinite(alpha))
        return fed_errorf(FED_EINVAL, "LoRA: rank must be in [1, %d] and alpha positive (%zu, %g)",
                          FED_LORA_MAX_RANK, rank, (double)alpha);
    /* Every pattern must match a weight that takes adapters. */
    char pat[PATTERN_MAX], name[FED_TENSOR_NAME_MAX_ARCH];
    for (const char *pos = targets && *targets ? targets : NULL; pos;) {
        if (!next_pattern(&pos, pat))
            return fed_errorf(FED_EINVAL, "LoRA: empty or overlong pattern in \"%s\"", targets);
        bool hit = false;
        for (size_t i = 0; i < a->nlayers && !hit; i++)
            for (size_t j = 0; j < NUM_LORA_WEIGHTS; j++)
                hit |= lora_candidate(a, i, j, skip, name) && fnmatch(pat, name, 0) == 0;
        if (!hit)
            return fed_errorf(FED_EINVAL,
                              "LoRA: \"%s\" matches no weight that takes adapters (linear, "
                              "1x1 conv2d, attention qkv/out, residual proj; see fedtune info)",
                              pat);
    }
    fed_arch *b;
    fed_err err = fed_arch_clone(&b, a);
    if (err) return err;
    size_t hits = 0;
    for (size_t i = 0; i < b->nlayers; i++) {
        fed_layer_spec *ls = &b->layers[i];
        for (size_t j = 0; j < NUM_LORA_WEIGHTS; j++) {
            if (!lora_candidate(b, i, j, skip, name) || !targets_match(targets, name)) continue;
            if (ls->lora_on & lora_weights[j].bit) {
                fed_arch_destroy(&b);
                return fed_errorf(FED_EINVAL, "LoRA: %s has adapters already", name);
            }
            if (ls->lora_rank && (ls->lora_rank != rank || ls->lora_alpha != alpha)) {
                fed_arch_destroy(&b);
                return fed_errorf(FED_EINVAL, "LoRA: layer %s has adapters of another rank",
                                  ls->name);
            }
            ls->lora_rank = rank;
            ls->lora_alpha = alpha;
            ls->lora_on |= lora_weights[j].bit;
            if (ls->kind == FED_LAYER_RESIDUAL_END) { /* the block's JSON shows them */
                fed_layer_spec *open = &b->layers[ls->pair];
                open->lora_rank = rank;
                open->lora_alpha = alpha;
                open->lora_on = ls->lora_on;
            }
            hits++;
        }
    }
    if ((err = rederive(b))) {
        fed_arch_destroy(&b);
        return err;
    }
    if (matched) *matched = hits;
    *out = b;
    return FED_OK;
}

fed_err fed_arch_drop_lora(fed_arch **out, const fed_arch *a) {
    fed_err err = fed_arch_clone(out, a);
    if (err) return err;
    for (size_t i = 0; i < (*out)->nlayers; i++) {
        (*out)->layers[i].lora_rank = 0;
        (*out)->layers[i].lora_alpha = 0.0f;
        (*out)->layers[i].lora_on = 0;
    }
    if ((err = rederive(*out))) fed_arch_destroy(out);
    return err;
}

size_t fed_arch_num_lora(const fed_arch *a) {
    size_t n = 0;
    for (size_t i = 0; i < a->nlayers; i++) {
        const fed_layer_spec *ls = &a->layers[i];
        if (ls->kind == FED_LAYER_RESIDUAL || !ls->lora_rank) continue;
        n += (ls->lora_on & FED_LORA_MAIN ? 1 : 0) + (ls->lora_on & FED_LORA_SECOND ? 1 : 0);
    }
    return n;
}

bool fed_arch_is_lm(const fed_arch *a) {
    const fed_layer_spec *last = &a->layers[a->nlayers - 1];
    if (last->kind != FED_LAYER_LMHEAD || last->tied != 0) return false;
    const fed_shape *out = &a->shapes[a->nlayers];
    return out->ndim == 2 && out->d[0] == a->input.d[0];
}

size_t fed_arch_set_dropout(fed_arch *a, float p) {
    size_t n = 0;
    for (size_t i = 0; i < a->nlayers; i++) {
        if (a->layers[i].kind == FED_LAYER_DROPOUT) {
            a->layers[i].p = p;
            n++;
        }
    }
    return n;
}

void fed_arch_destroy(fed_arch **a) {
    if (!a || !*a) return;
    fed_free((*a)->layers);
    fed_free((*a)->shapes);
    fed_free(*a);
    *a = NULL;
}

fed_shape fed_arch_input_shape(const fed_arch *a) {
    return a->input;
}

size_t fed_arch_num_params(const fed_arch *a) {
    return a->nparams;
}

size_t fed_arch_num_layers(const fed_arch *a) {
    return a->nlayers;
}

const fed_layer_spec *fed_arch_layer(const fed_arch *a, size_t i) {
    return i < a->nlayers ? &a->layers[i] : NULL;
}

fed_shape fed_arch_shape_at(const fed_arch *a, size_t i) {
    return a->shapes[i <= a->nlayers ? i : a->nlayers];
}

/* ---- canonical JSON --------------------------------------------------------------- */

/* Adds a number and reports whether cJSON could allocate it. */
static bool add_num(cJSON *o, const char *k, double v) {
    return cJSON_AddNumberToObject(o, k, v) != NULL;
}

/* Floats are written as the shortest decimal that reads back to the same float. */
static double float_for_json(float f) {
    char buf[32];
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
        if ((float)strtod(buf, NULL) == f) break;
    }
    return strtod(buf, NULL);
}

static bool layer_to_json(cJSON *o, const fed_layer_spec *ls) {
    if (!cJSON_AddStringToObject(o, "type", fed_layer_kind_name(ls->kind))) return false;
    switch (ls->kind) {
    case FED_LAYER_LINEAR:
        return add_num(o, "out", (double)ls->out) && cJSON_AddBoolToObject(o, "bias", ls->bias) &&
               cJSON_AddStringToObject(o, "init", init_names[ls->init]);
    case FED_LAYER_CONV2D:
        return add_num(o, "out", (double)ls->out) && add_num(o, "k", (double)ls->k) &&
               add_num(o, "stride", (double)ls->stride) && add_num(o, "pad", (double)ls->pad) &&
               cJSON_AddBoolToObject(o, "bias", ls->bias) &&
               cJSON_AddStringToObject(o, "init", init_names[ls->init]);
    case FED_LAYER_MAXPOOL2D:
    case FED_LAYER_AVGPOOL2D:
        return add_num(o, "k", (double)ls->k) && add_num(o, "stride", (double)ls->stride);
    case FED_LAYER_DROPOUT:
        return add_num(o, "p", float_for_json(ls->p));
    case FED_LAYER_LAYERNORM:
        return add_num(o, "eps", float_for_json(ls->eps));
    case FED_LAYER_EMBEDDING:
        return add_num(o, "vocab", (double)ls->vocab) && add_num(o, "dim", (double)ls->dim) &&
               cJSON_AddStringToObject(o, "init", init_names[ls->init]) &&
               (!ls->padded || cJSON_AddBoolToObject(o, "pad", true));
    case FED_LAYER_POSITIONS:
        return cJSON_AddStringToObject(o, "kind",
                                       ls->pos == FED_POS_LEARNED ? "learned" : "sinusoidal");
    case FED_LAYER_ATTENTION:
        return add_num(o, "heads", (double)ls->heads) && add_num(o, "out", (double)ls->out) &&
               cJSON_AddBoolToObject(o, "causal", ls->causal) &&
               cJSON_AddBoolToObject(o, "bias", ls->bias) &&
               cJSON_AddStringToObject(o, "init", init_names[ls->init]);
    case FED_LAYER_RESIDUAL:
        return cJSON_AddBoolToObject(o, "proj", ls->proj) &&
               cJSON_AddStringToObject(o, "init", init_names[ls->init]);
    case FED_LAYER_L2NORM:
        return add_num(o, "eps", float_for_json(ls->eps));
    case FED_LAYER_LMHEAD:
        return cJSON_AddStringToObject(o, "tie", ls->tie) != NULL;
    case FED_LAYER_RESIDUAL_END:
    case FED_LAYER_MEANPOOL:
    case FED_LAYER_GLOBALAVGPOOL:
    case FED_LAYER_FLATTEN:
    case FED_LAYER_RELU:
    case FED_LAYER_GELU:
    case FED_LAYER_TANH:
    case FED_LAYER_SIGMOID:
        return true;
    }
    return false;
}

/* "lora": {"rank", "alpha", "on"} of ls. */
static bool lora_to_json(cJSON *o, const fed_layer_spec *ls) {
    cJSON *l = cJSON_AddObjectToObject(o, "lora");
    cJSON *on = l && add_num(l, "rank", (double)ls->lora_rank) &&
                        add_num(l, "alpha", float_for_json(ls->lora_alpha))
                    ? cJSON_AddArrayToObject(l, "on")
                    : NULL;
    if (!on) return false;
    for (size_t i = 0; i < sizeof lora_weights / sizeof lora_weights[0]; i++) {
        if (lora_weights[i].kind != ls->kind || !(ls->lora_on & lora_weights[i].bit)) continue;
        cJSON *sv = cJSON_CreateString(lora_weights[i].on);
        if (!sv || !cJSON_AddItemToArray(on, sv)) {
            cJSON_Delete(sv);
            return false;
        }
    }
    return true;
}

/* Writes layers [from, to) into arr, a residual block as one object with its "layers";
 * "name" only where it is not the default path. Returns the index reached (to on
 * success, less when cJSON could not allocate). */
static size_t write_list(cJSON *arr, const fed_arch *a, size_t from, size_t to,
                         const char *prefix) {
    size_t i = from;
    for (size_t j = 0; i < to; j++) {
        const fed_layer_spec *ls = &a->layers[i];
        char path[FED_LAYER_NAME_MAX + 24];
        if (prefix)
            snprintf(path, sizeof path, "%s.%zu", prefix, j);
        else
            snprintf(path, sizeof path, "%zu", j);
        cJSON *o = cJSON_CreateObject();
        if (!o || !cJSON_AddItemToArray(arr, o)) {
            cJSON_Delete(o);
            return i;
        }
        const fed_layer_spec *lo = ls->kind == FED_LAYER_RESIDUAL ? &a->layers[ls->pair] : ls;
        if (!layer_to_json(o, ls) || (lo->lora_rank && !lora_to_json(o, lo)) ||
            (strcmp(ls->name, path) != 0 && !cJSON_AddStringToObject(o, "name", ls->name)))
            return i;
        if (ls->kind != FED_LAYER_RESIDUAL) {
            i++;
            continue;
        }
        cJSON *kids = cJSON_AddArrayToObject(o, "layers");
        if (!kids || write_list(kids, a, i + 1, ls->pair, ls->name) != ls->pair) return i;
        i = ls->pair + 1;
    }
    return i;
}

fed_err fed_arch_to_json(const fed_arch *a, char **json) {
    *json = NULL;
    fed_err err = FED_ENOMEM;
    char *text = NULL;
    fed_json_hooks();
    cJSON *root = cJSON_CreateObject();
    cJSON *input = root ? cJSON_AddArrayToObject(root, "input") : NULL;
    cJSON *layers = input ? cJSON_AddArrayToObject(root, "layers") : NULL;
    if (!layers) goto fail;
    for (int i = 0; i < a->input.ndim; i++) {
        cJSON *n = cJSON_CreateNumber((double)a->input.d[i]);
        if (!n || !cJSON_AddItemToArray(input, n)) {
            cJSON_Delete(n);
            goto fail;
        }
    }
    if (write_list(layers, a, 0, a->nlayers, NULL) != a->nlayers) goto fail;
    text = cJSON_PrintUnformatted(root);
    if (!text) goto fail;
    *json = fed_strdup(text);
    if (*json) err = FED_OK;
fail:
    if (err) fed_errorf(err, "out of memory writing the architecture as JSON");
    cJSON_free(text);
    cJSON_Delete(root);
    return err;
}
