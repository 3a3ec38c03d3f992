/* Architecture specs: JSON parsing with field-level errors, shape inference, presets and
 * the canonical JSON writer. The only file of core/ that knows cJSON besides the model
 * file code. Nothing here owns parameters: see model.c. */
#include "core/arch.h"
#include "core/alloc.h"
#include "core/json.h"
#include "core/kernels.h"

#include <cJSON.h>
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
};

static const char *const init_names[] = {"kaiming", "xavier", "torch", "normal"};

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
    char text[64];
} where;

static where at_layer(size_t i, const char *type) {
    where w;
    snprintf(w.text, sizeof w.text, "layer %zu (%s)", i, type);
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
        FED_EFORMAT, "%s: field \"init\": must be \"kaiming\", \"xavier\", \"torch\" or \"normal\"",
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

static fed_err parse_layer(const cJSON *obj, size_t idx, fed_layer_spec *ls) {
    where w = at_layer(idx, "?");
    if (!cJSON_IsObject(obj)) return fed_errorf(FED_EFORMAT, "%s: must be an object", w.text);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(obj, "type");
    if (!cJSON_IsString(t))
        return fed_errorf(FED_EFORMAT, "%s: missing string field \"type\"", w.text);
    size_t nk = sizeof kind_names / sizeof kind_names[0], ki;
    for (ki = 0; ki < nk; ki++)
        if (strcmp(t->valuestring, kind_names[ki].name) == 0) break;
    if (ki == nk)
        return fed_errorf(FED_EFORMAT, "layer %zu: unknown type \"%.40s\"", idx, t->valuestring);
    memset(ls, 0, sizeof *ls);
    ls->kind = kind_names[ki].kind;
    w = at_layer(idx, kind_names[ki].name);

    fed_err err = FED_OK;
    const size_t MAXD = FED_MAX_DIM_SIZE;
    switch (ls->kind) {
    case FED_LAYER_LINEAR: {
        static const char *const keys[] = {"out", "bias", "init", NULL};
        if ((err = check_keys(obj, &w, keys)) ||
            (err = get_size(obj, &w, "out", 1, MAXD, true, 0, &ls->out)) ||
            (err = get_bool(obj, &w, "bias", true, &ls->bias)) ||
            (err = get_init(obj, &w, FED_INIT_KAIMING, &ls->init)))
            return err;
        break;
    }
    case FED_LAYER_CONV2D: {
        static const char *const keys[] = {"out", "k", "stride", "pad", "bias", "init", NULL};
        if ((err = check_keys(obj, &w, keys)) ||
            (err = get_size(obj, &w, "out", 1, MAXD, true, 0, &ls->out)) ||
            (err = get_size(obj, &w, "k", 1, 64, true, 0, &ls->k)) ||
            (err = get_size(obj, &w, "stride", 1, 64, false, 1, &ls->stride)) ||
            (err = get_size(obj, &w, "pad", 0, 64, false, 0, &ls->pad)) ||
            (err = get_bool(obj, &w, "bias", true, &ls->bias)) ||
            (err = get_init(obj, &w, FED_INIT_KAIMING, &ls->init)))
            return err;
        break;
    }
    case FED_LAYER_MAXPOOL2D:
    case FED_LAYER_AVGPOOL2D: {
        static const char *const keys[] = {"k", "stride", NULL};
        if ((err = check_keys(obj, &w, keys)) ||
            (err = get_size(obj, &w, "k", 1, 64, true, 0, &ls->k)) ||
            (err = get_size(obj, &w, "stride", 1, 64, false, ls->k, &ls->stride)))
            return err;
        break;
    }
    case FED_LAYER_DROPOUT: {
        static const char *const keys[] = {"p", NULL};
        if ((err = check_keys(obj, &w, keys)) ||
            (err = get_float(obj, &w, "p", 0.0, 1.0, true, 0.5f, &ls->p)))
            return err;
        break;
    }
    case FED_LAYER_LAYERNORM: {
        static const char *const keys[] = {"eps", NULL};
        if ((err = check_keys(obj, &w, keys)) ||
            (err = get_float(obj, &w, "eps", 1e-12, 1.0, false, 1e-5f, &ls->eps)))
            return err;
        break;
    }
    case FED_LAYER_EMBEDDING: {
        static const char *const keys[] = {"vocab", "dim", "init", NULL};
        if ((err = check_keys(obj, &w, keys)) ||
            (err = get_size(obj, &w, "vocab", 1, (size_t)1 << 24, true, 0, &ls->vocab)) ||
            (err = get_size(obj, &w, "dim", 1, MAXD, true, 0, &ls->dim)) ||
            (err = get_init(obj, &w, FED_INIT_NORMAL, &ls->init)))
            return err;
        break;
    }
    case FED_LAYER_GLOBALAVGPOOL:
    case FED_LAYER_FLATTEN:
    case FED_LAYER_RELU:
    case FED_LAYER_GELU:
    case FED_LAYER_TANH:
    case FED_LAYER_SIGMOID: {
        static const char *const keys[] = {NULL};
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

/* Output shape of layer ls for input in, or an error naming the layer. */
static fed_err infer_shape(const fed_layer_spec *ls, size_t idx, const fed_shape *in,
                           fed_shape *out) {
    where w = at_layer(idx, fed_layer_kind_name(ls->kind));
    *out = *in;
    switch (ls->kind) {
    case FED_LAYER_LINEAR:
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
    case FED_LAYER_LAYERNORM:
    case FED_LAYER_RELU:
    case FED_LAYER_GELU:
    case FED_LAYER_TANH:
    case FED_LAYER_SIGMOID:
    case FED_LAYER_DROPOUT:
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

/* Parameters layer ls owns given its input shape; SIZE_MAX if the count overflows. */
static size_t layer_params(const fed_layer_spec *ls, const fed_shape *in) {
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
    default:
        return 0;
    }
}

static fed_err build(fed_arch **out, const fed_shape *input, const cJSON *layers, size_t first) {
    size_t total = (size_t)cJSON_GetArraySize(layers);
    size_t n = total - first;
    fed_err err = FED_ENOMEM;
    fed_arch *a = fed_calloc(1, sizeof *a);
    if (!a) goto fail;
    a->layers = fed_calloc(n ? n : 1, sizeof *a->layers);
    a->shapes = fed_calloc(n + 1, sizeof *a->shapes);
    if (!a->layers || !a->shapes) goto fail;
    a->input = *input;
    a->nlayers = n;
    a->shapes[0] = *input;
    size_t i = 0;
    for (const cJSON *it = layers->child; it; it = it->next, i++) {
        if (i < first) continue;
        size_t li = i - first;
        if ((err = parse_layer(it, li, &a->layers[li]))) goto fail;
        if ((err = infer_shape(&a->layers[li], li, &a->shapes[li], &a->shapes[li + 1]))) goto fail;
        size_t np = layer_params(&a->layers[li], &a->shapes[li]);
        if (np > FED_MAX_PARAMS || a->nparams + np > FED_MAX_PARAMS) {
            err = fed_errorf(FED_ERANGE, "layer %zu (%s): too many parameters (limit %zu in all)",
                             li, fed_layer_kind_name(a->layers[li].kind), FED_MAX_PARAMS);
            goto fail;
        }
        a->nparams += np;
    }
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

fed_err fed_arch_clone(fed_arch **out, const fed_arch *src) {
    *out = NULL;
    fed_arch *a = fed_calloc(1, sizeof *a);
    if (!a) return FED_ENOMEM;
    a->layers = fed_mallocarray(src->nlayers ? src->nlayers : 1, sizeof *a->layers);
    a->shapes = fed_mallocarray(src->nlayers + 1, sizeof *a->shapes);
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

fed_err fed_arch_new_head(fed_arch **out, const fed_arch *a, size_t classes, size_t *head) {
    *out = NULL;
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
    if (classes < 1 || classes > FED_MAX_PARAMS)
        return fed_errorf(FED_EINVAL, "new head: %zu classes", classes);
    fed_arch *b;
    fed_err err = fed_arch_clone(&b, a);
    if (err) return err;
    b->layers[h].out = classes;
    b->nparams = 0;
    for (size_t i = 0; i < b->nlayers; i++) {
        if ((err = infer_shape(&b->layers[i], i, &b->shapes[i], &b->shapes[i + 1]))) break;
        size_t np = layer_params(&b->layers[i], &b->shapes[i]);
        if (np > FED_MAX_PARAMS || b->nparams + np > FED_MAX_PARAMS) {
            err = fed_errorf(FED_ERANGE, "new head: %zu classes make too many parameters", classes);
            break;
        }
        b->nparams += np;
    }
    if (err) {
        fed_arch_destroy(&b);
        return err;
    }
    if (head) *head = h;
    *out = b;
    return FED_OK;
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
               cJSON_AddStringToObject(o, "init", init_names[ls->init]);
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
    for (size_t i = 0; i < a->nlayers; i++) {
        cJSON *o = cJSON_CreateObject();
        if (!o || !cJSON_AddItemToArray(layers, o)) {
            cJSON_Delete(o);
            goto fail;
        }
        if (!layer_to_json(o, &a->layers[i])) goto fail;
    }
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
