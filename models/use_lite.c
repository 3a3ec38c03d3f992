/* USE-lite's weights, vocabulary and provenance (use_lite.h): the tensor table from TF.js
 * names to fedtune's, the layout conversion, the vocabulary check, fedtune.source, and
 * the model built from FED_USE_LITE_ARCH and filled by name. The graph's checks live in
 * use_lite_graph.c. */
#include "models/use_lite.h"
#include "core/alloc.h"
#include "core/arch.h"
#include "core/json.h"
#include "core/utf8.h"
#include "dataset/tokenizer.h"
#include "models/tfjs.h"
#include "models/use_lite_internal.h"

#include <cJSON.h>
#include <stdio.h>
#include <string.h>

#define E          "module_apply_default/Encoder_en/KonaTransformer/Encode/"
#define TS         E "TransformerStack/"
#define MOD        "module/Encoder_en/KonaTransformer/Encode/"
#define HID        "module/Encoder_en/hidden_layers/"
#define CONCAT     "ConcatPartitions/concat"
#define VOCAB_JSON "dist/vocab.json"
#define RESERVED   6 /* the tokenizer's special pieces, ids 0..5 */

typedef enum layout {
    COPY,      /* same layout */
    TRANSPOSE, /* TF [in, out] or [1, 1, in, out] -> (out, in) */
    TWICE,     /* 2 x the values: the graph adds the embeddings twice */
} layout;

/* One tensor: fedtune's name, the TF shape, the conversion, the TF.js weight. */
typedef struct tensor_map {
    const char *name;
    int ndim;
    size_t shape[4];
    layout how;
    const char *tf;
} tensor_map;

/* clang-format off */
static const tensor_map tensors[] = {
    {"embed.weight", 2, {8002, 256}, TWICE,
     "module/Embeddings_en"},
    {"l0.attn.norm.weight", 1, {256}, COPY,
     E "Layer_0/TransformerLayer/layer_prepostprocess/layer_norm/layer_norm_scale/" CONCAT},
    {"l0.attn.norm.bias", 1, {256}, COPY,
     E "Layer_0/TransformerLayer/layer_prepostprocess/layer_norm/layer_norm_bias/" CONCAT},
    {"l0.attn.proj.weight", 2, {256, 512}, TRANSPOSE,
     E "Layer_0/TransformerLayer/dense/kernel/" CONCAT},
    {"l0.attn.proj.bias", 1, {512}, COPY,
     E "Layer_0/TransformerLayer/dense/bias/" CONCAT},
    {"l0.attn.mha.qkv.weight", 4, {1, 1, 256, 768}, TRANSPOSE,
     MOD "Layer_0/TransformerLayer/MultiheadAttention/qkv_transform_single/kernel/part_0"},
    {"l0.attn.mha.qkv.bias", 1, {768}, COPY,
     E "Layer_0/TransformerLayer/MultiheadAttention/qkv_transform_single/bias/" CONCAT},
    {"l0.attn.mha.out.weight", 4, {1, 1, 256, 512}, TRANSPOSE,
     MOD "Layer_0/TransformerLayer/MultiheadAttention/output_transform_single/kernel/part_0"},
    {"l0.attn.mha.out.bias", 1, {512}, COPY,
     E "Layer_0/TransformerLayer/MultiheadAttention/output_transform_single/bias/" CONCAT},
    {"l0.ffn.norm.weight", 1, {512}, COPY,
     E "Layer_0/TransformerLayer/FFN/layer_prepostprocess/layer_norm/layer_norm_scale/" CONCAT},
    {"l0.ffn.norm.bias", 1, {512}, COPY,
     E "Layer_0/TransformerLayer/FFN/layer_prepostprocess/layer_norm/layer_norm_bias/" CONCAT},
    {"l0.ffn.fc1.weight", 2, {512, 1536}, TRANSPOSE,
     TS "Layer_0/TransformerLayer/FFN/conv1/Tensordot/Reshape_1"},
    {"l0.ffn.fc1.bias", 1, {1536}, COPY,
     E "Layer_0/TransformerLayer/FFN/conv1/bias/" CONCAT},
    {"l0.ffn.fc2.weight", 2, {1536, 512}, TRANSPOSE,
     TS "Layer_0/TransformerLayer/FFN/conv2/Tensordot/Reshape_1"},
    {"l0.ffn.fc2.bias", 1, {512}, COPY,
     E "Layer_0/TransformerLayer/FFN/conv2/bias/" CONCAT},
    {"l1.attn.norm.weight", 1, {512}, COPY,
     E "Layer_1/TransformerLayer/layer_prepostprocess/layer_norm/layer_norm_scale/" CONCAT},
    {"l1.attn.norm.bias", 1, {512}, COPY,
     E "Layer_1/TransformerLayer/layer_prepostprocess/layer_norm/layer_norm_bias/" CONCAT},
    {"l1.attn.mha.qkv.weight", 4, {1, 1, 512, 1536}, TRANSPOSE,
     MOD "Layer_1/TransformerLayer/MultiheadAttention/qkv_transform_single/kernel/part_0"},
    {"l1.attn.mha.qkv.bias", 1, {1536}, COPY,
     E "Layer_1/TransformerLayer/MultiheadAttention/qkv_transform_single/bias/" CONCAT},
    {"l1.attn.mha.out.weight", 4, {1, 1, 512, 512}, TRANSPOSE,
     MOD "Layer_1/TransformerLayer/MultiheadAttention/output_transform_single/kernel/part_0"},
    {"l1.attn.mha.out.bias", 1, {512}, COPY,
     E "Layer_1/TransformerLayer/MultiheadAttention/output_transform_single/bias/" CONCAT},
    {"l1.ffn.norm.weight", 1, {512}, COPY,
     E "Layer_1/TransformerLayer/FFN/layer_prepostprocess/layer_norm/layer_norm_scale/" CONCAT},
    {"l1.ffn.norm.bias", 1, {512}, COPY,
     E "Layer_1/TransformerLayer/FFN/layer_prepostprocess/layer_norm/layer_norm_bias/" CONCAT},
    {"l1.ffn.fc1.weight", 2, {512, 1536}, TRANSPOSE,
     TS "Layer_1/TransformerLayer/FFN/conv1/Tensordot/Reshape_1"},
    {"l1.ffn.fc1.bias", 1, {1536}, COPY,
     E "Layer_1/TransformerLayer/FFN/conv1/bias/" CONCAT},
    {"l1.ffn.fc2.weight", 2, {1536, 512}, TRANSPOSE,
     TS "Layer_1/TransformerLayer/FFN/conv2/Tensordot/Reshape_1"},
    {"l1.ffn.fc2.bias", 1, {512}, COPY,
     E "Layer_1/TransformerLayer/FFN/conv2/bias/" CONCAT},
    {"pool.dense.weight", 2, {512, 512}, TRANSPOSE,
     HID "tanh_layer_0/weights"},
    {"pool.dense.bias", 1, {512}, COPY,
     HID "tanh_layer_0/bias"},
};
/* clang-format on */
#define NT (sizeof tensors / sizeof tensors[0])

struct fed_use_lite {
    fed_st_entry t[NT];   /* fedtune's tensors */
    size_t shapes[NT][2]; /* their shapes */
    float *data[NT];      /* their values, owned */
    fed_meta *meta;       /* fedtune.tokenizer, fedtune.source */
};

static fed_err convert(fed_use_lite *u, const fed_tfjs *g, bool *used, size_t i) {
    const tensor_map *m = &tensors[i];
    const fed_tfjs_weight *w = fed_tfjs_weight_find(g, m->tf);
    if (!w)
        return fed_errorf(FED_ENOTFOUND, "%s: weight \"%s\" (fedtune's %s) is missing",
                          fed_tfjs_what(g), m->tf, m->name);
    bool same = w->ndim == m->ndim;
    for (int d = 0; same && d < m->ndim; d++) same = w->shape[d] == m->shape[d];
    if (w->dtype != FED_TFJS_F32 || !same) {
        char got[96] = "[", want[96] = "[";
        for (int d = 0; d < w->ndim; d++)
            snprintf(got + strlen(got), sizeof got - strlen(got), d ? ", %zu" : "%zu", w->shape[d]);
        for (int d = 0; d < m->ndim; d++)
            snprintf(want + strlen(want), sizeof want - strlen(want), d ? ", %zu" : "%zu",
                     m->shape[d]);
        return fed_errorf(w->dtype != FED_TFJS_F32 ? FED_EFORMAT : FED_ESHAPE,
                          "%s: weight \"%s\" (fedtune's %s) is %s %s], expected float32 %s]",
                          fed_tfjs_what(g), m->tf, m->name,
                          w->dtype == FED_TFJS_F32 ? "float32" : "int32", got, want);
    }
    used[w - fed_tfjs_weight_at(g, 0)] = true;
    size_t in = m->how == TRANSPOSE ? m->shape[m->ndim - 2] : 0;
    size_t out = m->how == TRANSPOSE ? m->shape[m->ndim - 1] : 0;
    float *x = fed_mallocarray(w->numel ? w->numel : 1, sizeof *x);
    if (!x) return FED_ENOMEM;
    u->data[i] = x;
    if (m->how == TRANSPOSE) {
        for (size_t r = 0; r < in; r++)
            for (size_t c = 0; c < out; c++) x[c * in + r] = fed_tfjs_f32(w, r * out + c);
        u->shapes[i][0] = out;
        u->shapes[i][1] = in;
    } else {
        for (size_t k = 0; k < w->numel; k++)
            x[k] = m->how == TWICE ? 2.0f * fed_tfjs_f32(w, k) : fed_tfjs_f32(w, k);
        u->shapes[i][0] = m->shape[0];
        u->shapes[i][1] = m->ndim > 1 ? m->shape[1] : 0;
    }
    u->t[i] = (fed_st_entry){m->name, m->how == TRANSPOSE ? 2 : m->ndim, u->shapes[i], x};
    return FED_OK;
}

/* vocab.json: an array of [piece, score] pairs, score a number or null, at most `rows`
 * pieces (the embedding's rows) and at least the reserved ones. *text: the file as is. */
static fed_err check_vocab(fed_pkg *pkg, size_t rows, const char **text, size_t *len) {
    char what[1024];
    fed_pkg_file_path(pkg, VOCAB_JSON, what, sizeof what);
    const uint8_t *b = NULL;
    fed_err err = fed_pkg_read(pkg, VOCAB_JSON, &b, len);
    if (err) return err;
    *text = (const char *)b;
    size_t bad = fed_utf8_bad_at(*text, *len);
    if (bad != *len) return fed_errorf(FED_EFORMAT, "%s: byte %zu is not valid UTF-8", what, bad);
    if (memchr(b, 0, *len)) return fed_errorf(FED_EFORMAT, "%s: holds a NUL byte", what);
    fed_json_hooks();
    cJSON *v = cJSON_ParseWithLength(*text, *len);
    if (!v)
        return fed_json_oom() ? FED_ENOMEM : fed_errorf(FED_EFORMAT, "%s: not valid JSON", what);
    size_t n = 0;
    if (!cJSON_IsArray(v)) err = fed_errorf(FED_EFORMAT, "%s: not a JSON array", what);
    for (const cJSON *e = cJSON_IsArray(v) ? v->child : NULL; e && !err; e = e->next, n++) {
        const cJSON *piece = cJSON_GetArrayItem(e, 0), *score = cJSON_GetArrayItem(e, 1);
        if (!cJSON_IsArray(e) || cJSON_GetArraySize(e) != 2 || !cJSON_IsString(piece) ||
            !piece->valuestring[0] || !(cJSON_IsNumber(score) || cJSON_IsNull(score)))
            err = fed_errorf(FED_EFORMAT,
                             "%s: entry %zu is not a [piece, score] pair (a non-empty string and "
                             "a number or null)",
                             what, n);
    }
    if (!err && (n < RESERVED || n > rows))
        err = fed_errorf(FED_EFORMAT,
                         "%s: %zu pieces, the model has %zu embedding rows (and %d "
                         "reserved pieces)",
                         what, n, rows, RESERVED);
    cJSON_Delete(v);
    return err;
}

static void hex(char *dst, const uint8_t d[32]) {
    for (int i = 0; i < 32; i++) snprintf(dst + 2 * i, 3, "%02x", d[i]);
}

/* fedtune.source: package@version from package.json (null when there is none), the
 * digests when sha256 is given. */
static fed_err source_json(fed_pkg *pkg, const fed_tfjs *g, const char *vocab, size_t vlen,
                           fed_digest_fn sha256, char **out) {
    *out = NULL;
    const uint8_t *pj = NULL;
    size_t pjlen = 0;
    char what[1024];
    fed_pkg_file_path(pkg, "package.json", what, sizeof what);
    fed_err err = fed_pkg_read(pkg, "package.json", &pj, &pjlen);
    if (err && err != FED_ENOTFOUND) return err;
    fed_json_hooks();
    cJSON *o = cJSON_CreateObject(), *p = NULL;
    if (!o) return FED_ENOMEM;
    err = FED_OK;
    if (pj) {
        p = cJSON_ParseWithLength((const char *)pj, pjlen);
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(p, "name");
        const cJSON *version = cJSON_GetObjectItemCaseSensitive(p, "version");
        if (!p && fed_json_oom()) {
            err = FED_ENOMEM;
        } else if (!cJSON_IsString(name) || !cJSON_IsString(version) ||
                   fed_utf8_bad_at(name->valuestring, strlen(name->valuestring)) !=
                       strlen(name->valuestring) ||
                   fed_utf8_bad_at(version->valuestring, strlen(version->valuestring)) !=
                       strlen(version->valuestring)) {
            err = fed_errorf(FED_EFORMAT, "%s: not JSON with a \"name\" and a \"version\" string",
                             what);
        } else {
            char pv[512];
            snprintf(pv, sizeof pv, "%s@%s", name->valuestring, version->valuestring);
            if (!cJSON_AddStringToObject(o, "package", pv)) err = FED_ENOMEM;
        }
    } else if (!cJSON_AddNullToObject(o, "package")) {
        err = FED_ENOMEM;
    }
    size_t tlen = 0;
    const uint8_t *tar = fed_pkg_tarball(pkg, &tlen);
    if (!err && !cJSON_AddStringToObject(o, "from", tar ? "tarball" : "folder")) err = FED_ENOMEM;
    if (!err && sha256) {
        uint8_t d[32];
        char h[65];
        const uint8_t *mj = NULL;
        size_t mjlen = 0;
        cJSON *ws = cJSON_AddArrayToObject(o, "weights_sha256");
        if (!ws) err = FED_ENOMEM;
        if (!err && tar) {
            sha256(tar, tlen, d);
            hex(h, d);
            if (!cJSON_AddStringToObject(o, "tarball_sha256", h)) err = FED_ENOMEM;
        }
        if (!err && !(err = fed_pkg_read(pkg, "dist/model.json", &mj, &mjlen))) {
            sha256(mj, mjlen, d);
            hex(h, d);
            if (!cJSON_AddStringToObject(o, "model_sha256", h)) err = FED_ENOMEM;
        }
        if (!err) {
            sha256(vocab, vlen, d);
            hex(h, d);
            if (!cJSON_AddStringToObject(o, "vocab_sha256", h)) err = FED_ENOMEM;
        }
        for (size_t i = 0; !err && i < fed_tfjs_num_groups(g); i++) {
            size_t n = 0;
            const uint8_t *bytes = fed_tfjs_group_bytes(g, i, &n);
            sha256(bytes, n, d);
            hex(h, d);
            cJSON *s = cJSON_CreateString(h);
            if (!s || !cJSON_AddItemToArray(ws, s)) {
                cJSON_Delete(s);
                err = FED_ENOMEM;
            }
        }
    }
    if (!err && !(*out = cJSON_PrintUnformatted(o))) err = FED_ENOMEM;
    cJSON_Delete(p);
    cJSON_Delete(o);
    return err;
}

static fed_err metadata(fed_use_lite *u, fed_pkg *pkg, const fed_tfjs *g, fed_digest_fn sha256) {
    const char *vocab = NULL;
    size_t vlen = 0;
    fed_err err = check_vocab(pkg, tensors[0].shape[0], &vocab, &vlen);
    if (err) return err;
    /* The vocabulary as is, trimmed of the white space around it. */
    while (vlen && strchr(" \t\r\n", vocab[vlen - 1])) vlen--;
    while (vlen && strchr(" \t\r\n", vocab[0])) vocab++, vlen--;
    static const char head[] = "{\"type\":\"unigram\",\"reserved\":6,\"unk\":0,\"vocab\":";
    char *tok = fed_malloc(sizeof head + vlen + 1), *src = NULL;
    if (!tok) return FED_ENOMEM;
    memcpy(tok, head, sizeof head - 1);
    memcpy(tok + sizeof head - 1, vocab, vlen);
    memcpy(tok + sizeof head - 1 + vlen, "}", 2);
    /* The tokenizer that will read it must accept it as written. */
    fed_tokenizer *t = NULL;
    char what[1100];
    fed_pkg_file_path(pkg, VOCAB_JSON, what, 1024);
    strcat(what, " as fedtune.tokenizer");
    if (!(err = fed_tokenizer_parse(&t, tok, strlen(tok), what)) &&
        !(err = fed_meta_new(&u->meta)) &&
        !(err = fed_meta_set(u->meta, FED_META_TOKENIZER, tok)) &&
        !(err = source_json(pkg, g, vocab, vlen, sha256, &src)))
        err = fed_meta_set(u->meta, FED_META_SOURCE, src);
    fed_tokenizer_destroy(&t);
    fed_free(tok);
    cJSON_free(src);
    return err;
}

fed_err fed_use_lite_read(fed_use_lite **out, fed_pkg *pkg, fed_digest_fn sha256) {
    *out = NULL;
    fed_use_lite *u = fed_calloc(1, sizeof *u);
    fed_tfjs *g = NULL;
    bool *used = NULL;
    fed_err err = FED_ENOMEM;
    if (!u) goto fail;
    if ((err = fed_tfjs_read(&g, pkg))) goto fail;
    used = fed_calloc(fed_tfjs_num_weights(g) + 1, sizeof *used);
    if (!used) {
        err = FED_ENOMEM;
        goto fail;
    }
    for (size_t i = 0; i < NT; i++)
        if ((err = convert(u, g, used, i))) goto fail;
    if ((err = fed__use_lite_check_graph(g, used))) goto fail;
    for (size_t i = 0; i < fed_tfjs_num_weights(g); i++) {
        const fed_tfjs_weight *w = fed_tfjs_weight_at(g, i);
        if (w->dtype == FED_TFJS_F32 && !used[i]) {
            err = fed_errorf(FED_EFORMAT,
                             "%s: float32 weight \"%s\" is not one the converter knows (not the "
                             "USE-lite graph fedtune imports)",
                             fed_tfjs_what(g), w->name);
            goto fail;
        }
    }
    if ((err = metadata(u, pkg, g, sha256))) goto fail;
    *out = u;
    u = NULL;
fail:
    fed_free(used);
    fed_tfjs_destroy(&g);
    fed_use_lite_destroy(&u);
    return err;
}

void fed_use_lite_destroy(fed_use_lite **u) {
    if (!u || !*u) return;
    for (size_t i = 0; i < NT; i++) fed_free((*u)->data[i]);
    fed_meta_destroy(&(*u)->meta);
    fed_free(*u);
    *u = NULL;
}

size_t fed_use_lite_num_tensors(const fed_use_lite *u) {
    (void)u;
    return NT;
}

const fed_st_entry *fed_use_lite_tensor(const fed_use_lite *u, size_t i) {
    return i < NT ? &u->t[i] : NULL;
}

const fed_meta *fed_use_lite_meta(const fed_use_lite *u) {
    return u->meta;
}

fed_err fed_use_lite_model(fed_model **out, const fed_use_lite *u) {
    *out = NULL;
    fed_arch *arch = NULL;
    fed_model *m = NULL;
    fed_err err = fed_arch_parse(&arch, FED_USE_LITE_ARCH);
    if (err) {
        err = fed_errprefix(err, "USE-lite's architecture");
        goto fail;
    }
    if ((err = fed_model_new(&m, arch))) goto fail;
    float *params = fed_model_params(m);
    for (size_t i = 0; i < NT; i++) {
        const fed_st_entry *e = &u->t[i];
        const fed_tensor *t = fed_model_find(m, e->name);
        if (!t) {
            err =
                fed_errorf(FED_ENOTFOUND, "USE-lite's architecture has no tensor \"%s\"", e->name);
            goto fail;
        }
        bool same = t->ndim == e->ndim;
        for (int d = 0; same && d < e->ndim; d++) same = t->shape[d] == e->shape[d];
        if (!same) {
            err = fed_errorf(FED_ESHAPE,
                             "tensor \"%s\": the architecture makes it (%zu, %zu)%s, the import "
                             "has (%zu, %zu)",
                             e->name, t->shape[0], t->ndim > 1 ? t->shape[1] : 0,
                             t->ndim > 2 ? " and more" : "", e->shape[0],
                             e->ndim > 1 ? e->shape[1] : 0);
            goto fail;
        }
        memcpy(params + t->offset, e->data, t->numel * sizeof *params);
    }
    if (fed_model_num_tensors(m) != NT) {
        for (size_t i = 0; i < fed_model_num_tensors(m); i++) {
            const char *name = fed_model_tensor(m, i)->name;
            bool known = false;
            for (size_t k = 0; k < NT && !known; k++) known = strcmp(u->t[k].name, name) == 0;
            if (!known) {
                err = fed_errorf(FED_ENOTFOUND,
                                 "the architecture's tensor \"%s\" has no counterpart in USE-lite",
                                 name);
                goto fail;
            }
        }
    }
    *out = m;
    m = NULL;
fail:
    fed_model_destroy(&m);
    fed_arch_destroy(&arch);
    return err;
}

fed_err fed_use_lite_import(const char *from, const char *out_path, fed_digest_fn sha256,
                            size_t *params) {
    fed_pkg *pkg = NULL;
    fed_use_lite *u = NULL;
    fed_model *m = NULL;
    fed_err err = fed_pkg_open(&pkg, from);
    if (!err) err = fed_use_lite_read(&u, pkg, sha256);
    if (!err) err = fed_use_lite_model(&m, u);
    if (!err) err = fed_model_save(m, out_path, fed_use_lite_meta(u));
    if (!err && params) *params = fed_model_num_params(m);
    fed_model_destroy(&m);
    fed_use_lite_destroy(&u);
    fed_pkg_destroy(&pkg);
    return err;
}
