/* The model: tensor table over one flat buffer, seeded initialisation, and the
 * layer-by-layer forward and backward passes that call the kernels. Parsing specs is
 * arch.c's job; reading and writing model files is not here either. */
#include "core/model.h"
#include "core/model_internal.h"
#include "core/alloc.h"
#include "core/blas.h"
#include "core/kernels.h"
#include "core/log.h"
#include "core/rng.h"

#include <fnmatch.h>
#include <assert.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

/* ---- construction ----------------------------------------------------------------- */

/* Appends tensor "<layer>.<suffix>" of the given shape; returns its index. */
static long add_tensor(fed_model *m, size_t layer, const char *suffix, int ndim,
                       const size_t *shape) {
    fed_tensor *t = &m->tensors[m->ntensors];
    snprintf(t->name, sizeof t->name, "%.39s.%.23s", m->layers[layer].spec.name, suffix);
    t->ndim = ndim;
    t->numel = 1;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = shape[i];
        t->numel *= shape[i];
    }
    t->offset = m->nparams;
    t->layer = layer;
    t->trainable = true;
    m->nparams += t->numel;
    return (long)m->ntensors++;
}

/* Adds the LoRA tensors of weight k of layer l (in -> out) when it has adapters. */
static void add_lora(fed_model *m, size_t l, int k, const char *prefix, size_t in, size_t out) {
    layer_rt *L = &m->layers[l];
    unsigned bit = k == 0 ? FED_LORA_MAIN : FED_LORA_SECOND;
    if (!L->spec.lora_rank || !(L->spec.lora_on & bit)) return;
    char suffix[32];
    size_t shape[2] = {L->spec.lora_rank, in};
    snprintf(suffix, sizeof suffix, "%slora_A", prefix);
    L->la[k] = add_tensor(m, l, suffix, 2, shape);
    shape[0] = out;
    shape[1] = L->spec.lora_rank;
    snprintf(suffix, sizeof suffix, "%slora_B", prefix);
    L->lb[k] = add_tensor(m, l, suffix, 2, shape);
    L->lscale = L->spec.lora_alpha / (float)L->spec.lora_rank;
}

/* Fills the tensor table. The architecture already bounded every count. */
static void plan_tensors(fed_model *m) {
    for (size_t l = 0; l < m->nlayers; l++) {
        layer_rt *L = &m->layers[l];
        const fed_layer_spec *s = &L->spec;
        size_t last = L->in.d[L->in.ndim - 1];
        size_t shape[4] = {0};
        L->w = L->b = L->w2 = L->b2 = -1;
        L->la[0] = L->la[1] = L->lb[0] = L->lb[1] = -1;
        L->rows = L->in_numel / last;
        switch (s->kind) {
        case FED_LAYER_LINEAR:
            shape[0] = s->out;
            shape[1] = last;
            L->w = add_tensor(m, l, "weight", 2, shape);
            if (s->bias) L->b = add_tensor(m, l, "bias", 1, shape);
            add_lora(m, l, 0, "", last, s->out);
            break;
        case FED_LAYER_CONV2D:
            shape[0] = s->out;
            shape[1] = L->in.d[0];
            shape[2] = shape[3] = s->k;
            L->w = add_tensor(m, l, "weight", 4, shape);
            if (s->bias) L->b = add_tensor(m, l, "bias", 1, shape);
            fed_conv_geom_init(&L->geom, L->in.d[0], L->in.d[1], L->in.d[2], s->out, s->k,
                               s->stride, s->pad);
            add_lora(m, l, 0, "", L->in.d[0], s->out); /* 1x1 only (arch.c) */
            break;
        case FED_LAYER_LAYERNORM:
            shape[0] = last;
            L->w = add_tensor(m, l, "weight", 1, shape);
            L->b = add_tensor(m, l, "bias", 1, shape);
            break;
        case FED_LAYER_EMBEDDING:
            shape[0] = s->vocab;
            shape[1] = s->dim;
            L->w = add_tensor(m, l, "weight", 2, shape);
            break;
        case FED_LAYER_POSITIONS:
            if (s->pos != FED_POS_LEARNED) break;
            shape[0] = L->in.d[0];
            shape[1] = last;
            L->w = add_tensor(m, l, "weight", 2, shape);
            break;
        case FED_LAYER_ATTENTION:
            shape[0] = 3 * last;
            shape[1] = last;
            L->w = add_tensor(m, l, "qkv.weight", 2, shape);
            if (s->bias) L->b = add_tensor(m, l, "qkv.bias", 1, shape);
            shape[0] = s->out;
            L->w2 = add_tensor(m, l, "out.weight", 2, shape);
            if (s->bias) L->b2 = add_tensor(m, l, "out.bias", 1, shape);
            add_lora(m, l, 0, "qkv.", last, 3 * last);
            add_lora(m, l, 1, "out.", last, s->out);
            break;
        case FED_LAYER_LMHEAD: /* no tensor: the tied embedding's table, planned before */
            L->w = m->layers[s->tied].w;
            break;
        case FED_LAYER_RESIDUAL_END:
            if (!s->proj) break;
            shape[0] = L->out.d[L->out.ndim - 1];
            shape[1] = m->layers[s->pair].in.d[L->out.ndim - 1];
            L->w2 = add_tensor(m, l, "proj.weight", 2, shape);
            L->b2 = add_tensor(m, l, "proj.bias", 1, shape);
            add_lora(m, l, 1, "proj.", shape[1], shape[0]);
            break;
        default:
            break;
        }
    }
}

fed_err fed_model_new(fed_model **out, const fed_arch *arch) {
    *out = NULL;
    fed_err err = FED_ENOMEM;
    fed_model *m = fed_calloc(1, sizeof *m);
    if (!m) goto fail;
    if ((err = fed_arch_clone(&m->arch, arch))) goto fail;
    err = FED_ENOMEM;
    m->nlayers = fed_arch_num_layers(arch);
    bool seq = false;
    m->layers = fed_calloc(m->nlayers, sizeof *m->layers);
    m->tensors = fed_calloc(8 * m->nlayers, sizeof *m->tensors); /* at most eight per layer */
    if (!m->layers || !m->tensors) goto fail;
    for (size_t l = 0; l < m->nlayers; l++) {
        layer_rt *L = &m->layers[l];
        L->spec = *fed_arch_layer(arch, l);
        L->in = fed_arch_shape_at(arch, l);
        L->out = fed_arch_shape_at(arch, l + 1);
        L->in_numel = fed_shape_numel(&L->in);
        L->out_numel = fed_shape_numel(&L->out);
        L->in_eff = L->in_numel;
        L->out_eff = L->out_numel;
        L->seq_in = seq;
        if (L->spec.kind == FED_LAYER_EMBEDDING && L->spec.padded) {
            seq = true;
            m->T = L->in.d[0];
        }
        if (L->spec.kind == FED_LAYER_MEANPOOL) seq = false;
        L->seq_out = seq;
    }
    m->Tb = m->T;
    plan_tensors(m);
    m->params = fed_aligned_alloc(m->nparams, sizeof(float));
    /* calloc: a large zeroed buffer comes as untouched pages, so a model that never
     * trains (the coordinator's) does not pay for its gradients in resident memory. */
    m->grads = fed_calloc(m->nparams ? m->nparams : 1, sizeof(float));
    if (!m->params || !m->grads) goto fail;
    memset(m->params, 0, m->nparams * sizeof(float));
    if ((err = fed__model_seq_tables(m))) goto fail;
    *out = m;
    return FED_OK;
fail:
    fed_model_destroy(&m);
    return err;
}

void fed_model_destroy(fed_model **m) {
    if (!m || !*m) return;
    fed_arch_destroy(&(*m)->arch);
    fed_free((*m)->layers);
    fed_free((*m)->tensors);
    fed_free((*m)->params);
    fed_free((*m)->grads);
    fed_free((*m)->tables);
    fed_free(*m);
    *m = NULL;
}

/* ---- initialisation --------------------------------------------------------------- */

static void fill_uniform(float *p, size_t n, float bound, fed_rng *r) {
    for (size_t i = 0; i < n; i++) p[i] = (2.0f * fed_rng_uniform(r) - 1.0f) * bound;
}

fed_err fed_model_clone(fed_model **out, const fed_model *m) {
    fed_model *n = NULL;
    fed_err err = fed_model_new(&n, m->arch);
    if (err) {
        *out = NULL;
        return err;
    }
    memcpy(n->params, m->params, m->nparams * sizeof(float));
    for (size_t i = 0; i < m->ntensors; i++) n->tensors[i].trainable = m->tensors[i].trainable;
    *out = n;
    return FED_OK;
}

size_t fed_model_set_dropout(fed_model *m, float p) {
    size_t n = fed_arch_set_dropout(m->arch, p);
    for (size_t i = 0; i < m->nlayers; i++)
        if (m->layers[i].spec.kind == FED_LAYER_DROPOUT) m->layers[i].spec.p = p;
    return n;
}

fed_err fed_model_new_head(fed_model **out, const fed_model *m, size_t classes, uint64_t seed) {
    *out = NULL;
    fed_arch *arch = NULL;
    size_t head;
    fed_err err = fed_arch_new_head(&arch, m->arch, classes, &head);
    if (err) return err;
    fed_model *n = NULL;
    err = fed_model_new(&n, arch);
    fed_arch_destroy(&arch);
    if (err) return err;
    /* Salted: a model initialised from seed s and given a new head from the same s must
     * not get back the head it was initialised with (after pre-training, the backbone
     * has co-adapted to that head, so it would hardly be new). */
    fed_model_init(n, fed_mix64(seed ^ 0x6e65772d68656164ull)); /* "new-head" */
    for (size_t i = 0; i < n->ntensors; i++) {
        fed_tensor *t = &n->tensors[i];
        const fed_tensor *src = fed_model_find(m, t->name);
        /* Layers keep their indices, so names match one to one; the head is new. */
        if (!src || t->layer == head) continue;
        memcpy(n->params + t->offset, m->params + src->offset, t->numel * sizeof(float));
        t->trainable = src->trainable;
    }
    *out = n;
    return FED_OK;
}

/* Tensor ti's initial values: stream ti of seed, so a tensor's bits do not depend on
 * which other tensors are initialised. */
static void init_tensor(fed_model *m, size_t ti, uint64_t seed) {
    fed_tensor *t = &m->tensors[ti];
    const layer_rt *L = &m->layers[t->layer];
    float *p = m->params + t->offset;
    fed_rng r = fed_rng_stream(seed, ti);
    bool second = (long)ti == L->w2 || (long)ti == L->b2;
    const fed_tensor *w = &m->tensors[second ? L->w2 : L->w];
    if ((long)ti == L->la[0] || (long)ti == L->la[1]) { /* PEFT: kaiming(a=sqrt(5)) */
        fill_uniform(p, t->numel, 1.0f / sqrtf((float)t->shape[1]), &r);
        return;
    }
    if ((long)ti == L->lb[0] || (long)ti == L->lb[1]) { /* B = 0: the update starts at 0 */
        memset(p, 0, t->numel * sizeof(float));
        return;
    }
    /* PyTorch's convention: fan_in = dim 1 x receptive field, fan_out = dim 0 x it. */
    size_t receptive = w->ndim == 4 ? w->shape[2] * w->shape[3] : 1;
    size_t fan_in = (w->ndim >= 2 ? w->shape[1] : w->shape[0]) * receptive;
    size_t fan_out = w->shape[0] * receptive;
    bool is_bias = (long)ti == L->b || (long)ti == L->b2;

    if (L->spec.kind == FED_LAYER_POSITIONS) { /* learned: N(0, 0.02^2), as GPT-2 */
        for (size_t i = 0; i < t->numel; i++) p[i] = 0.02f * fed_rng_normal(&r);
        return;
    }
    if (L->spec.kind == FED_LAYER_LAYERNORM) {
        for (size_t i = 0; i < t->numel; i++) p[i] = is_bias ? 0.0f : 1.0f;
        return;
    }
    switch (L->spec.init) {
    case FED_INIT_KAIMING:
        if (is_bias)
            memset(p, 0, t->numel * sizeof(float));
        else
            fill_uniform(p, t->numel, sqrtf(6.0f / (float)fan_in), &r);
        break;
    case FED_INIT_XAVIER:
        if (is_bias)
            memset(p, 0, t->numel * sizeof(float));
        else
            fill_uniform(p, t->numel, sqrtf(6.0f / (float)(fan_in + fan_out)), &r);
        break;
    case FED_INIT_TORCH:
        fill_uniform(p, t->numel, 1.0f / sqrtf((float)fan_in), &r);
        break;
    case FED_INIT_NORMAL:
        for (size_t i = 0; i < t->numel; i++) p[i] = is_bias ? 0.0f : fed_rng_normal(&r);
        break;
    case FED_INIT_GPT2:
        for (size_t i = 0; i < t->numel; i++) p[i] = is_bias ? 0.0f : 0.02f * fed_rng_normal(&r);
        break;
    }
}

void fed_model_init(fed_model *m, uint64_t seed) {
    for (size_t ti = 0; ti < m->ntensors; ti++) init_tensor(m, ti, seed);
}

/* Copies every tensor of src that n has (same name and size), with its flag. */
static void copy_by_name(fed_model *n, const fed_model *src) {
    for (size_t i = 0; i < n->ntensors; i++) {
        fed_tensor *t = &n->tensors[i];
        const fed_tensor *st = fed_model_find(src, t->name);
        if (!st || st->numel != t->numel) continue;
        memcpy(n->params + t->offset, src->params + st->offset, t->numel * sizeof(float));
        t->trainable = st->trainable;
    }
}

fed_err fed_model_add_lora(fed_model **out, const fed_model *m, size_t rank, float alpha,
                           const char *targets, size_t skip, uint64_t seed, size_t *matched) {
    *out = NULL;
    fed_arch *arch = NULL;
    fed_err err = fed_arch_add_lora(&arch, m->arch, rank, alpha, targets, skip, matched);
    if (err) return err;
    fed_model *n = NULL;
    err = fed_model_new(&n, arch);
    fed_arch_destroy(&arch);
    if (err) return err;
    copy_by_name(n, m);
    for (size_t i = 0; i < n->ntensors; i++) {
        fed_tensor *t = &n->tensors[i];
        const layer_rt *L = &n->layers[t->layer];
        bool adapter = (long)i == L->la[0] || (long)i == L->la[1] || (long)i == L->lb[0] ||
                       (long)i == L->lb[1];
        if (adapter) init_tensor(n, i, fed_mix64(seed ^ 0x6c6f7261ull)); /* "lora" */
        if (t->layer != skip) t->trainable = adapter;
    }
    *out = n;
    return FED_OK;
}

fed_err fed_model_merge_lora(fed_model **out, const fed_model *m) {
    *out = NULL;
    fed_arch *arch = NULL;
    fed_err err = fed_arch_drop_lora(&arch, m->arch);
    if (err) return err;
    fed_model *n = NULL;
    err = fed_model_new(&n, arch);
    fed_arch_destroy(&arch);
    if (err) return err;
    copy_by_name(n, m);
    for (size_t l = 0; l < m->nlayers; l++) {
        const layer_rt *L = &m->layers[l];
        for (int k = 0; k < 2; k++) {
            if (L->la[k] < 0) continue;
            const fed_tensor *w = &m->tensors[k ? L->w2 : L->w];
            const fed_tensor *A = &m->tensors[L->la[k]], *B = &m->tensors[L->lb[k]];
            const fed_tensor *nw = fed_model_find(n, w->name);
            if (!nw) continue; /* cannot happen: the base weights keep their names */
            /* W (out, in) += scale * B (out, r) A (r, in) */
            fed_gemm(false, false, w->shape[0], w->shape[1], A->shape[0], L->lscale,
                     m->params + B->offset, B->shape[1], m->params + A->offset, A->shape[1], 1.0f,
                     n->params + nw->offset, w->shape[1]);
        }
    }
    *out = n;
    return FED_OK;
}

/* ---- accessors -------------------------------------------------------------------- */

const fed_arch *fed_model_arch(const fed_model *m) {
    return m->arch;
}

size_t fed_model_num_tensors(const fed_model *m) {
    return m->ntensors;
}

const fed_tensor *fed_model_tensor(const fed_model *m, size_t i) {
    return i < m->ntensors ? &m->tensors[i] : NULL;
}

const fed_tensor *fed_model_find(const fed_model *m, const char *name) {
    for (size_t i = 0; i < m->ntensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0) return &m->tensors[i];
    return NULL;
}

float *fed_model_params(fed_model *m) {
    return m->params;
}

const float *fed_model_params_const(const fed_model *m) {
    return m->params;
}

float *fed_model_grads(fed_model *m) {
    assert(m->grads && "fed_model_drop_grads was called on this model");
    return m->grads;
}

size_t fed_model_num_params(const fed_model *m) {
    return m->nparams;
}

size_t fed_model_activation_floats(const fed_model *m) {
    size_t n = 0;
    for (size_t l = 0; l < m->nlayers; l++) n += m->layers[l].out_numel;
    return n;
}

size_t fed_model_num_trainable(const fed_model *m) {
    size_t n = 0;
    for (size_t i = 0; i < m->ntensors; i++)
        if (m->tensors[i].trainable) n += m->tensors[i].numel;
    return n;
}

bool fed_model_delta(const fed_model *m, const float *local, const float *global, float *out) {
    bool finite = true;
    size_t k = 0, nt = fed_model_num_tensors(m);
    for (size_t i = 0; i < nt; i++) {
        const fed_tensor *t = fed_model_tensor(m, i);
        if (!t->trainable) continue;
        const float *p = local + t->offset, *g = global + t->offset;
        for (size_t j = 0; j < t->numel; j++) {
            float d = p[j] - g[j];
            finite &= isfinite(d) != 0;
            out[k++] = d;
        }
    }
    return finite;
}

size_t fed_model_input_size(const fed_model *m) {
    return m->layers[0].in_numel;
}

size_t fed_model_output_size(const fed_model *m) {
    return m->layers[m->nlayers - 1].out_numel;
}

/* Sets tensor i's flag. Freezing a tensor zeroes its gradient: backward never writes a
 * frozen tensor's gradient and fed_model_zero_grad skips it, so it stays zero. */
static void set_flag(fed_model *m, size_t i, bool trainable) {
    fed_tensor *t = &m->tensors[i];
    if (t->trainable && !trainable && m->grads)
        memset(m->grads + t->offset, 0, t->numel * sizeof(float));
    t->trainable = trainable;
}

void fed_model_set_trainable(fed_model *m, size_t i, bool trainable) {
    if (i < m->ntensors) set_flag(m, i, trainable);
}

size_t fed_model_set_trainable_glob(fed_model *m, const char *glob, bool trainable) {
    size_t n = 0;
    for (size_t i = 0; i < m->ntensors; i++) {
        if (fnmatch(glob, m->tensors[i].name, 0) == 0) {
            set_flag(m, i, trainable);
            n++;
        }
    }
    return n;
}

/* Longest pattern of a trainable spec, NUL and the ".*" of a bare index included: tensor
 * names are far shorter, so a longer pattern is a mistake, not a glob to try. */
#define SPEC_PATTERN_MAX 258

/* The pattern of spec that starts at *pos, trimmed of spaces, into buf (a bare layer
 * index N as "N.*"); *pos moves past it and its comma. *len gets the trimmed length of
 * the pattern as written, so errors can quote it; *pos is NULL after the last one. */
static fed_err spec_next(const char *spec, const char **pos, char buf[SPEC_PATTERN_MAX],
                         size_t *len) {
    const char *p = *pos, *comma = strchr(p, ',');
    const char *end = comma ? comma : p + strlen(p);
    *pos = comma ? comma + 1 : NULL;
    while (p < end && *p == ' ') p++;
    while (end > p && end[-1] == ' ') end--;
    *len = (size_t)(end - p);
    if (*len == 0) return fed_errorf(FED_EINVAL, "empty pattern in \"%s\"", spec);
    if (*len > SPEC_PATTERN_MAX - 3)
        return fed_errorf(FED_EINVAL, "pattern \"%.32s...\" is longer than %d characters", p,
                          SPEC_PATTERN_MAX - 3);
    memcpy(buf, p, *len);
    buf[*len] = '\0';
    if (strspn(buf, "0123456789") == *len) memcpy(buf + *len, ".*", 3);
    return FED_OK;
}

fed_err fed_model_set_trainable_spec(fed_model *m, const char *spec, bool trainable,
                                     size_t *matched) {
    if (matched) *matched = 0;
    if (!spec || !*spec) return FED_OK;
    char buf[SPEC_PATTERN_MAX];
    size_t len;
    /* First every pattern is checked, then the flags are set: an error changes nothing. */
    for (const char *pos = spec; pos;) {
        fed_err err = spec_next(spec, &pos, buf, &len);
        if (err) return err;
        size_t hits = 0;
        for (size_t i = 0; i < m->ntensors && !hits; i++)
            hits += fnmatch(buf, m->tensors[i].name, 0) == 0;
        if (hits) continue;
        if (buf[len]) /* a bare index, expanded: say what it stood for */
            return fed_errorf(FED_EINVAL,
                              "\"%.*s\" (layer %.*s, \"%s\") matches no tensor of the model "
                              "(a layer without weights? see fedtune info)",
                              (int)len, buf, (int)len, buf, buf);
        return fed_errorf(FED_EINVAL,
                          "\"%s\" matches no tensor of the model (names look like "
                          "\"0.weight\"; see fedtune info)",
                          buf);
    }
    size_t n = 0;
    for (size_t i = 0; i < m->ntensors; i++) {
        for (const char *pos = spec; pos;) {
            if (spec_next(spec, &pos, buf, &len)) break; /* cannot fail: checked above */
            if (fnmatch(buf, m->tensors[i].name, 0) == 0) {
                set_flag(m, i, trainable);
                n++;
                break;
            }
        }
    }
    if (matched) *matched = n;
    return FED_OK;
}

fed_err fed_model_copy_params(fed_model *m, const fed_model *src) {
    if (m->ntensors != src->ntensors || m->nparams != src->nparams)
        return fed_errorf(FED_ESHAPE, "models differ: %zu vs %zu tensors, %zu vs %zu parameters",
                          m->ntensors, src->ntensors, m->nparams, src->nparams);
    for (size_t i = 0; i < m->ntensors; i++) {
        const fed_tensor *a = &m->tensors[i], *b = &src->tensors[i];
        if (strcmp(a->name, b->name) != 0 || a->ndim != b->ndim ||
            memcmp(a->shape, b->shape, sizeof a->shape) != 0)
            return fed_errorf(FED_ESHAPE, "models differ at tensor %s", a->name);
    }
    memcpy(m->params, src->params, m->nparams * sizeof(float));
    return FED_OK;
}

void fed_model_zero_grad(fed_model *m) {
    for (size_t i = 0; m->grads && i < m->ntensors; i++) {
        const fed_tensor *t = &m->tensors[i];
        if (t->trainable) memset(m->grads + t->offset, 0, t->numel * sizeof(float));
    }
}

void fed_model_drop_grads(fed_model *m) {
    fed_free(m->grads);
    m->grads = NULL;
}

/* Multiply-add FLOPs of layer l's forward GEMM (0 for layers without one). */
static double layer_flops(const layer_rt *L) {
    if (L->spec.kind == FED_LAYER_LINEAR || L->spec.kind == FED_LAYER_LMHEAD)
        return 2.0 * (double)L->rows * (double)L->in.d[L->in.ndim - 1] * (double)L->spec.out;
    if (L->spec.kind == FED_LAYER_CONV2D)
        return 2.0 * (double)L->geom.OC * (double)(L->geom.C * L->geom.K * L->geom.K) *
               (double)(L->geom.OH * L->geom.OW);
    return 0.0;
}

double fed_model_forward_flops(const fed_model *m) {
    double flops = 0.0;
    for (size_t l = 0; l < m->nlayers; l++) flops += layer_flops(&m->layers[l]);
    return flops;
}

double fed_model_train_flops(const fed_model *m) {
    size_t lowest = m->nlayers;
    for (size_t i = 0; i < m->ntensors; i++)
        if (m->tensors[i].trainable && m->tensors[i].layer < lowest) lowest = m->tensors[i].layer;
    double flops = 0.0;
    for (size_t l = 0; l < m->nlayers; l++) {
        const layer_rt *L = &m->layers[l];
        double f = layer_flops(L);
        bool trainable = (L->w >= 0 && m->tensors[L->w].trainable);
        flops += f + (trainable ? f : 0.0) + (l > lowest ? f : 0.0); /* fwd, dW, dX */
    }
    return flops;
}

/* ---- forward ---------------------------------------------------------------------- */

/* Token ids arrive as floats; each must be an integer in [0, vocab). */
static fed_err embedding_ids(int32_t *ids, const float *x, size_t n, size_t T, size_t vocab,
                             size_t layer) {
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        if (!(v >= 0.0f && v < (float)vocab) || v != floorf(v))
            return fed_errorf(FED_ERANGE,
                              "layer %zu (embedding): example %zu position %zu: token id %g is "
                              "not an integer in [0, %zu)",
                              layer, i / T, i % T, (double)v, vocab);
        ids[i] = (int32_t)v;
    }
    return FED_OK;
}

fed_err fed__model_lin_forward(fed_model *m, layer_rt *L, int k, fed_arena *a, float *y,
                               const float *x, size_t rows, size_t C, size_t O) {
    fed_linear_forward(y, x, fed__model_tensor(m, k ? L->w2 : L->w),
                       fed__model_tensor(m, k ? L->b2 : L->b), rows, C, O);
    L->lt[k] = NULL;
    if (L->la[k] < 0) return FED_OK;
    size_t r = L->spec.lora_rank;
    ALLOC_OR_FAIL(L->lt[k], fed_arena_floats(a, rows * r));
    /* t = x A^T (rows, r); y += scale * t B^T */
    fed_gemm(false, true, rows, r, C, 1.0f, x, C, fed__model_tensor(m, L->la[k]), C, 0.0f, L->lt[k],
             r);
    fed_gemm(false, true, rows, O, r, L->lscale, L->lt[k], r, fed__model_tensor(m, L->lb[k]), r,
             1.0f, y, O);
    return FED_OK;
}

fed_err fed__model_lin_backward(fed_model *m, layer_rt *L, int k, fed_arena *a, float *dx,
                                const float *dy, const float *x, size_t rows, size_t C, size_t O) {
    long w = k ? L->w2 : L->w, b = k ? L->b2 : L->b;
    fed_linear_backward(dx, fed__model_grad(m, w), fed__model_grad(m, b), dy, x,
                        fed__model_tensor(m, w), rows, C, O);
    if (L->la[k] < 0) return FED_OK;
    size_t r = L->spec.lora_rank;
    float *dA = fed__model_grad(m, L->la[k]), *dB = fed__model_grad(m, L->lb[k]);
    const float *A = fed__model_tensor(m, L->la[k]), *B = fed__model_tensor(m, L->lb[k]);
    /* dB += scale * dy^T t; dt = scale * dy B; dA += dt^T x; dx += dt A */
    if (dB) fed_gemm(true, false, O, r, rows, L->lscale, dy, O, L->lt[k], r, 1.0f, dB, r);
    if (!dA && !dx) return FED_OK;
    float *dt;
    ALLOC_OR_FAIL(dt, fed_arena_floats(a, rows * r));
    fed_gemm(false, false, rows, r, O, L->lscale, dy, O, B, r, 0.0f, dt, r);
    if (dA) fed_gemm(true, false, r, C, rows, 1.0f, dt, r, x, C, 1.0f, dA, C);
    if (dx) fed_gemm(false, false, rows, C, r, 1.0f, dt, r, A, C, 1.0f, dx, C);
    return FED_OK;
}

/* Convolutions run by Winograd F(2x2, 5x5) (core/kernels_wino.c): 5x5, stride 1,
 * pad 2, with at least WINO_MIN_C input and output channels. Below that the transforms
 * cost more than the multiplies they save (the FedAvg CNN's conv1 has C = 1: measured
 * in bench/README.md). FEDTUNE_CONV=im2col in the environment, read once per process,
 * keeps every convolution on im2col + GEMM (for comparison and testing); auto (or unset)
 * is the default, any other value is ignored with a warning. */
#define WINO_MIN_C 8

static pthread_once_t conv_env_once = PTHREAD_ONCE_INIT;
static bool conv_im2col_only;

static void conv_env_read(void) {
    const char *v = getenv("FEDTUNE_CONV");
    conv_im2col_only = v && strcmp(v, "im2col") == 0;
    if (v && *v && !conv_im2col_only && strcmp(v, "auto") != 0)
        FED_LOG(FED_LOG_WARN, "FEDTUNE_CONV=%s ignored: it takes im2col or auto", v);
}

static bool conv_wino(const fed_conv_geom *g) {
    pthread_once(&conv_env_once, conv_env_read);
    return !conv_im2col_only && fed_conv_wino_fits(g) && g->C >= WINO_MIN_C && g->OC >= WINO_MIN_C;
}

/* LoRA on a 1x1 convolution: per example, (OC, HW) += scale * B (OC, r) @ (A (r, C) @ x
 * (C, HW)), the linear case with the pixels as rows, in NCHW order. */
static fed_err conv_lora_forward(fed_model *m, layer_rt *L, fed_arena *a, size_t N) {
    L->lt[0] = NULL;
    if (L->la[0] < 0) return FED_OK;
    size_t r = L->spec.lora_rank, C = L->geom.C, OC = L->geom.OC, HW = L->geom.H * L->geom.W;
    const float *A = fed__model_tensor(m, L->la[0]), *B = fed__model_tensor(m, L->lb[0]);
    ALLOC_OR_FAIL(L->lt[0], fed_arena_floats(a, N * r * HW));
    for (size_t n = 0; n < N; n++) {
        float *t = L->lt[0] + n * r * HW;
        fed_gemm(false, false, r, HW, C, 1.0f, A, C, L->x + n * C * HW, HW, 0.0f, t, HW);
        fed_gemm(false, false, OC, HW, r, L->lscale, B, r, t, HW, 1.0f, L->y + n * OC * HW, HW);
    }
    return FED_OK;
}

/* Its backward: dB += scale dy t^T; dt = scale B^T dy; dA += dt x^T; dx += A^T dt. */
static fed_err conv_lora_backward(fed_model *m, layer_rt *L, fed_arena *a, size_t N, float *dx,
                                  const float *dy) {
    if (L->la[0] < 0) return FED_OK;
    size_t r = L->spec.lora_rank, C = L->geom.C, OC = L->geom.OC, HW = L->geom.H * L->geom.W;
    const float *A = fed__model_tensor(m, L->la[0]), *B = fed__model_tensor(m, L->lb[0]);
    float *dA = fed__model_grad(m, L->la[0]), *dB = fed__model_grad(m, L->lb[0]), *dt;
    ALLOC_OR_FAIL(dt, fed_arena_floats(a, r * HW));
    for (size_t n = 0; n < N; n++) {
        const float *g = dy + n * OC * HW, *t = L->lt[0] + n * r * HW, *x = L->x + n * C * HW;
        if (dB) fed_gemm(false, true, OC, r, HW, L->lscale, g, HW, t, HW, 1.0f, dB, r);
        if (!dA && !dx) continue;
        fed_gemm(true, false, r, HW, OC, L->lscale, B, r, g, HW, 0.0f, dt, HW);
        if (dA) fed_gemm(false, true, r, C, HW, 1.0f, dt, HW, x, HW, 1.0f, dA, C);
        if (dx) fed_gemm(true, false, C, HW, r, 1.0f, A, C, dt, HW, 1.0f, dx + n * C * HW, HW);
    }
    return FED_OK;
}

static fed_err layer_forward(fed_model *m, layer_rt *L, size_t l, fed_arena *a, size_t N,
                             fed_mode mode, fed_rng *rng) {
    const fed_layer_spec *s = &L->spec;
    const float *x = L->x;
    size_t nin = N * L->in_eff, nout = N * L->out_eff;
    L->s1 = L->s2 = NULL;
    L->idx = NULL;
    /* Layers that do not change the data pass their input through without a copy. */
    if (s->kind == FED_LAYER_FLATTEN ||
        (s->kind == FED_LAYER_DROPOUT && (mode == FED_MODE_EVAL || s->p == 0.0f))) {
        L->y = (float *)x;
        return FED_OK;
    }
    ALLOC_OR_FAIL(L->y, fed_arena_floats(a, nout));
    const float *w = fed__model_tensor(m, L->w), *b = fed__model_tensor(m, L->b);
    size_t last = L->in.d[L->in.ndim - 1];
    switch (s->kind) {
    case FED_LAYER_LINEAR:
        (void)w;
        (void)b;
        return fed__model_lin_forward(m, L, 0, a, L->y, x, N * L->rows_eff, last, s->out);
    case FED_LAYER_LMHEAD: /* logits (rows, V) = x (rows, D) E^T, E (V, D) */
        fed_linear_forward(L->y, x, w, NULL, N * L->rows_eff, last, s->out);
        break;
    case FED_LAYER_CONV2D: {
        float *col;
        if (conv_wino(&L->geom)) {
            size_t G = fed_conv_wino_group(&L->geom, N);
            ALLOC_OR_FAIL(col, fed_arena_floats(a, fed_conv_wino_scratch_size(&L->geom, G)));
            fed_conv2d_forward_wino(L->y, col, x, w, b, N, G, &L->geom);
            return conv_lora_forward(m, L, a, N);
        }
        size_t G = fed_conv_group(&L->geom, N);
        ALLOC_OR_FAIL(col, fed_arena_floats(a, fed_conv_scratch_size(&L->geom, G)));
        fed_conv2d_forward_grouped(L->y, col, x, w, b, N, G, &L->geom);
        return conv_lora_forward(m, L, a, N);
    }
    case FED_LAYER_MAXPOOL2D:
        ALLOC_OR_FAIL(L->idx, fed_arena_alloc(a, nout, sizeof(int32_t)));
        fed_maxpool2d_forward(L->y, L->idx, x, N, L->in.d[0], L->in.d[1], L->in.d[2], s->k,
                              s->stride);
        break;
    case FED_LAYER_AVGPOOL2D:
        fed_avgpool2d_forward(L->y, x, N, L->in.d[0], L->in.d[1], L->in.d[2], s->k, s->stride);
        break;
    case FED_LAYER_GLOBALAVGPOOL:
        fed_globalavgpool_forward(L->y, x, N, L->in.d[0], L->in.d[1] * L->in.d[2]);
        break;
    case FED_LAYER_RELU:
        fed_relu_forward(L->y, x, nin);
        break;
    case FED_LAYER_GELU:
        fed_gelu_forward(L->y, x, nin);
        break;
    case FED_LAYER_TANH:
        fed_tanh_forward(L->y, x, nin);
        break;
    case FED_LAYER_SIGMOID:
        fed_sigmoid_forward(L->y, x, nin);
        break;
    case FED_LAYER_DROPOUT:
        if (!rng) return fed_errorf(FED_EINVAL, "layer %zu (dropout): training needs an rng", l);
        ALLOC_OR_FAIL(L->s1, fed_arena_floats(a, nin));
        fed_dropout_forward(L->y, L->s1, x, nin, s->p, rng);
        break;
    case FED_LAYER_LAYERNORM:
        ALLOC_OR_FAIL(L->s1, fed_arena_floats(a, N * L->rows_eff));
        ALLOC_OR_FAIL(L->s2, fed_arena_floats(a, N * L->rows_eff));
        fed_layernorm_forward(L->y, L->s1, L->s2, x, w, b, N * L->rows_eff, last, s->eps);
        break;
    case FED_LAYER_EMBEDDING: {
        ALLOC_OR_FAIL(L->idx, fed_arena_alloc(a, nin, sizeof(int32_t)));
        fed_err err = embedding_ids(L->idx, x, nin, L->in_numel, s->vocab, l);
        if (err) return err;
        fed_embedding_forward(L->y, L->idx, w, nin, s->dim);
        break;
    }
    case FED_LAYER_FLATTEN:
        break;
    default: /* sequence layers: model_seq.c */
        break;
    }
    return FED_OK;
}

/* Layers model_seq.c runs. */
static bool is_seq_layer(const layer_rt *L) {
    switch (L->spec.kind) {
    case FED_LAYER_EMBEDDING:
        return L->spec.padded;
    case FED_LAYER_POSITIONS:
    case FED_LAYER_ATTENTION:
    case FED_LAYER_RESIDUAL:
    case FED_LAYER_RESIDUAL_END:
    case FED_LAYER_MEANPOOL:
    case FED_LAYER_L2NORM:
        return true;
    default:
        return false;
    }
}

/* Per-example sizes at the current batch length m->Tb. */
static void set_eff(const fed_model *m, layer_rt *L) {
    L->in_eff = L->seq_in ? L->in_numel / m->T * m->Tb : L->in_numel;
    L->out_eff = L->seq_out ? L->out_numel / m->T * m->Tb : L->out_numel;
    L->rows_eff = L->seq_in ? L->rows / m->T * m->Tb : L->rows;
}

fed_err fed_model_forward(fed_model *m, fed_arena *a, const float *x, size_t N, fed_mode mode,
                          fed_rng *rng, const float **out) {
    *out = NULL;
    m->tape = false;
    m->batch = N;
    m->Tb = m->T;
    m->len = NULL;
    if (N == 0) return fed_errorf(FED_EINVAL, "forward: empty batch");
    const float *cur = x;
    for (size_t l = 0; l < m->nlayers; l++) {
        layer_rt *L = &m->layers[l];
        L->x = cur;
        set_eff(m, L);
        fed_err err = is_seq_layer(L) ? fed__model_seq_forward(m, L, l, a, N)
                                      : layer_forward(m, L, l, a, N, mode, rng);
        if (err) return err;
        cur = L->y;
    }
    m->tape = mode == FED_MODE_TRAIN;
    *out = cur;
    return FED_OK;
}

/* ---- backward --------------------------------------------------------------------- */

/* dx (N, in_numel) from dy, or NULL when the layers below need no gradient. Weight
 * gradients of trainable tensors accumulate into m->grads. */
static fed_err layer_backward(fed_model *m, layer_rt *L, fed_arena *a, size_t N, const float *dy,
                              bool need_dx, float **dx_out) {
    const fed_layer_spec *s = &L->spec;
    size_t nin = N * L->in_eff;
    float *dx = NULL;
    *dx_out = NULL;
    if (s->kind == FED_LAYER_FLATTEN || (s->kind == FED_LAYER_DROPOUT && !L->s1)) {
        *dx_out = (float *)dy;
        return FED_OK;
    }
    if (need_dx && s->kind != FED_LAYER_EMBEDDING) ALLOC_OR_FAIL(dx, fed_arena_floats(a, nin));
    const float *w = fed__model_tensor(m, L->w);
    float *dw = fed__model_grad(m, L->w), *db = fed__model_grad(m, L->b);
    size_t last = L->in.d[L->in.ndim - 1];
    switch (s->kind) {
    case FED_LAYER_LINEAR:
        (void)dw;
        (void)db;
        if (fed__model_lin_backward(m, L, 0, a, dx, dy, L->x, N * L->rows_eff, last, s->out))
            return FED_ENOMEM;
        break;
    case FED_LAYER_CONV2D: {
        if (!dx && !dw && !db && L->la[0] < 0) break;
        float *col;
        if (conv_wino(&L->geom)) {
            size_t G = fed_conv_wino_group(&L->geom, N);
            ALLOC_OR_FAIL(col, fed_arena_floats(a, fed_conv_wino_scratch_size(&L->geom, G)));
            if (dx) fed_conv2d_backward_data_wino(dx, col, dy, w, N, G, &L->geom);
            if (dw || db) fed_conv2d_backward_filter_wino(dw, db, col, dy, L->x, N, G, &L->geom);
        } else {
            size_t G = fed_conv_group(&L->geom, N);
            ALLOC_OR_FAIL(col, fed_arena_floats(a, fed_conv_scratch_size(&L->geom, G)));
            if (dx || dw || db)
                fed_conv2d_backward_grouped(dx, dw, db, col, dy, L->x, w, N, G, &L->geom);
        }
        if (conv_lora_backward(m, L, a, N, dx, dy)) return FED_ENOMEM;
        break;
    }
    case FED_LAYER_EMBEDDING:
        if (dw) fed_embedding_backward(dw, dy, L->idx, nin, s->dim);
        break;
    case FED_LAYER_LMHEAD: /* dE += dy^T x: the table's second source of gradient */
        if (dx || dw) fed_linear_backward(dx, dw, NULL, dy, L->x, w, N * L->rows_eff, last, s->out);
        break;
    case FED_LAYER_LAYERNORM:
        if (!dx && !dw && !db) break;
        if (!dx) ALLOC_OR_FAIL(dx, fed_arena_floats(a, nin)); /* the kernel always writes dx */
        fed_layernorm_backward(dx, dw, db, dy, L->x, L->s1, L->s2, w, N * L->rows_eff, last);
        if (!need_dx) dx = NULL;
        break;
    default:
        if (!dx) break;
        switch (s->kind) {
        case FED_LAYER_MAXPOOL2D:
            fed_maxpool2d_backward(dx, dy, L->idx, N, L->in.d[0], L->in.d[1], L->in.d[2], s->k,
                                   s->stride);
            break;
        case FED_LAYER_AVGPOOL2D:
            fed_avgpool2d_backward(dx, dy, N, L->in.d[0], L->in.d[1], L->in.d[2], s->k, s->stride);
            break;
        case FED_LAYER_GLOBALAVGPOOL:
            fed_globalavgpool_backward(dx, dy, N, L->in.d[0], L->in.d[1] * L->in.d[2]);
            break;
        case FED_LAYER_RELU:
            fed_relu_backward(dx, dy, L->x, nin);
            break;
        case FED_LAYER_GELU:
            fed_gelu_backward(dx, dy, L->x, nin);
            break;
        case FED_LAYER_TANH:
            fed_tanh_backward(dx, dy, L->y, nin);
            break;
        case FED_LAYER_SIGMOID:
            fed_sigmoid_backward(dx, dy, L->y, nin);
            break;
        case FED_LAYER_DROPOUT:
            fed_dropout_backward(dx, dy, L->s1, nin);
            break;
        default:
            break;
        }
        break;
    }
    *dx_out = dx;
    return FED_OK;
}

fed_err fed_model_backward(fed_model *m, fed_arena *a, const float *dout) {
    if (!m->tape)
        return fed_errorf(FED_EINVAL, "backward: no train-mode forward pass to back-propagate");
    /* Gradients flow down only as far as the lowest layer with a trainable tensor. */
    size_t lowest = m->nlayers;
    for (size_t i = 0; i < m->ntensors; i++) {
        if (m->tensors[i].trainable && m->tensors[i].layer < lowest) lowest = m->tensors[i].layer;
    }
    const float *dy = dout;
    for (size_t l = m->nlayers; l-- > lowest;) {
        float *dx;
        layer_rt *L = &m->layers[l];
        fed_err err = is_seq_layer(L)
                          ? fed__model_seq_backward(m, L, a, m->batch, dy, l > lowest, &dx)
                          : layer_backward(m, L, a, m->batch, dy, l > lowest, &dx);
        if (err) return err;
        dy = dx;
        if (!dy) break; /* an embedding: token ids have no gradient */
    }
    return FED_OK;
}
