/* TF.js graph models (tfjs.h): model.json through cJSON, the shards through the package,
 * then the cross-checks between manifest, bytes and graph. The JSON tree stays alive
 * with the model: names, inputs and attributes are read from it. */
#include "models/tfjs.h"
#include "core/alloc.h"
#include "core/endian.h"
#include "core/json.h"
#include "core/utf8.h"

#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MODEL_JSON "dist/model.json"
/* Integers in JSON must be below 2^53 to be exact in a double. */
#define JSON_INT_LIMIT 9007199254740992.0

/* A manifest group: its shards back to back. */
typedef struct group {
    uint8_t *bytes; /* (len) owned */
    size_t len;     /* total shard bytes */
} group;

struct fed_tfjs {
    char what[1024];    /* model.json as messages name it */
    cJSON *root;        /* the parsed model.json */
    size_t nw;          /* weights */
    fed_tfjs_weight *w; /* (nw) manifest order */
    size_t *w_sorted;   /* (nw) indices by name */
    size_t ng;          /* groups */
    group *g;           /* (ng) */
    size_t nn;          /* nodes */
    fed_tfjs_node *n;   /* (nn) graph order */
    const cJSON **attr; /* (nn) each node's "attr" object or NULL */
    size_t *n_sorted;   /* (nn) indices by name */
    size_t *consumers;  /* (nn) data inputs naming each node */
};

/* ---- lookups -------------------------------------------------------------------------- */

static _Thread_local const fed_tfjs *sort_g;

static int cmp_weight(const void *a, const void *b) {
    return strcmp(sort_g->w[*(const size_t *)a].name, sort_g->w[*(const size_t *)b].name);
}

static int cmp_node(const void *a, const void *b) {
    return strcmp(sort_g->n[*(const size_t *)a].name, sort_g->n[*(const size_t *)b].name);
}

/* Index of the node whose name is s[0..len), or SIZE_MAX. */
static size_t node_index(const fed_tfjs *g, const char *s, size_t len) {
    size_t lo = 0, hi = g->nn;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const char *name = g->n[g->n_sorted[mid]].name;
        int c = strncmp(name, s, len);
        if (c == 0 && name[len] != '\0') c = 1;
        if (c == 0) return g->n_sorted[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return SIZE_MAX;
}

/* The node an input string names ("^x", "x:1" -> x), or SIZE_MAX. *control: "^x". */
static size_t input_node(const fed_tfjs *g, const char *in, bool *control) {
    *control = in[0] == '^';
    if (*control) in++;
    size_t len = strlen(in);
    const char *colon = strrchr(in, ':');
    if (colon && colon[1]) {
        const char *d = colon + 1;
        while (*d >= '0' && *d <= '9') d++;
        if (*d == '\0') len = (size_t)(colon - in);
    }
    return node_index(g, in, len);
}

/* ---- parsing ------------------------------------------------------------------------- */

static bool json_size(const cJSON *v, size_t *out) {
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!(d >= 0 && d < JSON_INT_LIMIT) || d != floor(d)) return false;
    *out = (size_t)d;
    return true;
}

static fed_err parse_weight(fed_tfjs *g, const cJSON *e, size_t gi, fed_tfjs_weight *w) {
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(e, "name");
    if (!cJSON_IsObject(e) || !cJSON_IsString(name) || !name->valuestring[0])
        return fed_errorf(FED_EFORMAT, "%s: weightsManifest[%zu]: a weight without a name", g->what,
                          gi);
    w->name = name->valuestring;
    w->group = gi;
    for (const cJSON *k = e->child; k; k = k->next)
        if (strcmp(k->string, "quantization") == 0)
            return fed_errorf(FED_EUNSUPPORTED, "%s: weight \"%s\" is quantized", g->what, w->name);
        else if (strcmp(k->string, "name") && strcmp(k->string, "shape") &&
                 strcmp(k->string, "dtype") && strcmp(k->string, "group"))
            return fed_errorf(FED_EFORMAT, "%s: weight \"%s\": unknown field \"%s\"", g->what,
                              w->name, k->string);
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    if (!cJSON_IsString(dtype))
        return fed_errorf(FED_EFORMAT, "%s: weight \"%s\": field \"dtype\" must be a string",
                          g->what, w->name);
    if (strcmp(dtype->valuestring, "float32") == 0)
        w->dtype = FED_TFJS_F32;
    else if (strcmp(dtype->valuestring, "int32") == 0)
        w->dtype = FED_TFJS_I32;
    else
        return fed_errorf(FED_EUNSUPPORTED,
                          "%s: weight \"%s\": dtype \"%s\" (only float32 and int32 are read)",
                          g->what, w->name, dtype->valuestring);
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
    if (!cJSON_IsArray(shape))
        return fed_errorf(FED_EFORMAT, "%s: weight \"%s\": field \"shape\" must be an array",
                          g->what, w->name);
    int nd = cJSON_GetArraySize(shape);
    if (nd > FED_TFJS_MAX_DIMS)
        return fed_errorf(FED_EUNSUPPORTED, "%s: weight \"%s\": %d dimensions (at most %d)",
                          g->what, w->name, nd, FED_TFJS_MAX_DIMS);
    w->ndim = nd;
    w->numel = 1;
    int d = 0;
    for (const cJSON *s = shape->child; s; s = s->next, d++) {
        if (!json_size(s, &w->shape[d]) || !fed_mul_ok(w->numel, w->shape[d], &w->numel) ||
            w->numel > SIZE_MAX / 4)
            return fed_errorf(FED_EFORMAT,
                              "%s: weight \"%s\": shape[%d] must be a non-negative integer "
                              "(and the product below 2^62)",
                              g->what, w->name, d);
    }
    return FED_OK;
}

/* Reads group gi's shards from the package into one buffer. */
static fed_err load_group(fed_tfjs *g, fed_pkg *pkg, const cJSON *paths, size_t gi) {
    size_t total = 0;
    int np = cJSON_GetArraySize(paths);
    if (!cJSON_IsArray(paths) || np < 1)
        return fed_errorf(FED_EFORMAT,
                          "%s: weightsManifest[%zu]: \"paths\" must be a non-empty "
                          "array of file names",
                          g->what, gi);
    for (int pass = 0; pass < 2; pass++) {
        size_t at = 0;
        for (const cJSON *p = paths->child; p; p = p->next) {
            const char *s = cJSON_IsString(p) ? p->valuestring : NULL;
            if (!s || !s[0] || strchr(s, '/') || strchr(s, '\\') || strcmp(s, ".") == 0 ||
                strcmp(s, "..") == 0 || strlen(s) > 255 ||
                fed_utf8_bad_at(s, strlen(s)) != strlen(s))
                return fed_errorf(FED_EFORMAT,
                                  "%s: weightsManifest[%zu]: shard path %s%s%s is not a plain "
                                  "file name",
                                  g->what, gi, s ? "\"" : "", s ? s : "(not a string)",
                                  s ? "\"" : "");
            char name[300];
            snprintf(name, sizeof name, "dist/%s", s);
            const uint8_t *data = NULL;
            size_t len = 0;
            fed_err err = fed_pkg_read(pkg, name, &data, &len);
            if (err) return err;
            if (pass == 0) {
                if (!fed_add_ok(total, len, &total))
                    return fed_errorf(FED_ERANGE, "%s: the shards are too large", g->what);
            } else {
                memcpy(g->g[gi].bytes + at, data, len);
                at += len;
            }
        }
        if (pass == 0) {
            g->g[gi].bytes = fed_malloc(total ? total : 1);
            if (!g->g[gi].bytes) return FED_ENOMEM;
            g->g[gi].len = total;
        }
    }
    return FED_OK;
}

static fed_err parse_manifest(fed_tfjs *g, fed_pkg *pkg, const cJSON *man) {
    if (!cJSON_IsArray(man))
        return fed_errorf(FED_EFORMAT, "%s: \"weightsManifest\" must be an array", g->what);
    size_t ng = (size_t)cJSON_GetArraySize(man), nw = 0;
    for (const cJSON *grp = man->child; grp; grp = grp->next) {
        const cJSON *ws = cJSON_GetObjectItemCaseSensitive(grp, "weights");
        if (!cJSON_IsObject(grp) || !cJSON_IsArray(ws))
            return fed_errorf(FED_EFORMAT,
                              "%s: every weightsManifest entry must be an object with a "
                              "\"weights\" array",
                              g->what);
        nw += (size_t)cJSON_GetArraySize(ws);
    }
    g->g = fed_calloc(ng ? ng : 1, sizeof *g->g);
    g->w = fed_calloc(nw ? nw : 1, sizeof *g->w);
    if (!g->g || !g->w) return FED_ENOMEM;
    g->ng = ng;
    size_t gi = 0;
    for (const cJSON *grp = man->child; grp; grp = grp->next, gi++) {
        fed_err err = load_group(g, pkg, cJSON_GetObjectItemCaseSensitive(grp, "paths"), gi);
        if (err) return err;
        size_t at = 0, first = g->nw;
        const cJSON *ws = cJSON_GetObjectItemCaseSensitive(grp, "weights");
        for (const cJSON *e = ws->child; e; e = e->next) {
            fed_tfjs_weight *w = &g->w[g->nw];
            if ((err = parse_weight(g, e, gi, w))) return err;
            g->nw++;
            size_t bytes = w->numel * 4;
            if (bytes > g->g[gi].len - at)
                return fed_errorf(FED_EFORMAT,
                                  "%s: weightsManifest[%zu]: the weights need more bytes than its "
                                  "%zu shard bytes: weight \"%s\" (%zu bytes) starts at byte %zu "
                                  "(a truncated shard?)",
                                  g->what, gi, g->g[gi].len, w->name, bytes, at);
            w->data = g->g[gi].bytes + at;
            at += bytes;
        }
        if (at != g->g[gi].len)
            return fed_errorf(FED_EFORMAT,
                              "%s: weightsManifest[%zu]: %zu bytes of shards left over after the "
                              "%zu weights (%zu bytes)",
                              g->what, gi, g->g[gi].len - at, g->nw - first, at);
    }
    return FED_OK;
}

static fed_err parse_nodes(fed_tfjs *g, const cJSON *topo) {
    const cJSON *nodes = cJSON_GetObjectItemCaseSensitive(topo, "node");
    if (!cJSON_IsObject(topo) || !cJSON_IsArray(nodes))
        return fed_errorf(FED_EFORMAT,
                          "%s: \"modelTopology\" must be an object with a \"node\" "
                          "array",
                          g->what);
    size_t nn = (size_t)cJSON_GetArraySize(nodes);
    g->n = fed_calloc(nn ? nn : 1, sizeof *g->n);
    g->attr = fed_calloc(nn ? nn : 1, sizeof *g->attr);
    if (!g->n || !g->attr) return FED_ENOMEM;
    size_t i = 0;
    for (const cJSON *e = nodes->child; e; e = e->next, i++) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(e, "name");
        const cJSON *op = cJSON_GetObjectItemCaseSensitive(e, "op");
        const cJSON *in = cJSON_GetObjectItemCaseSensitive(e, "input");
        const cJSON *attr = cJSON_GetObjectItemCaseSensitive(e, "attr");
        if (!cJSON_IsObject(e) || !cJSON_IsString(name) || !name->valuestring[0])
            return fed_errorf(FED_EFORMAT, "%s: node %zu has no name", g->what, i);
        if (!cJSON_IsString(op) || !op->valuestring[0])
            return fed_errorf(FED_EFORMAT, "%s: node \"%s\" has no op", g->what, name->valuestring);
        if ((in && !cJSON_IsArray(in)) || (attr && !cJSON_IsObject(attr)))
            return fed_errorf(FED_EFORMAT,
                              "%s: node \"%s\": \"input\" must be an array and \"attr\" an object",
                              g->what, name->valuestring);
        for (const cJSON *k = e->child; k; k = k->next)
            if (strcmp(k->string, "name") && strcmp(k->string, "op") &&
                strcmp(k->string, "input") && strcmp(k->string, "attr") &&
                strcmp(k->string, "device") && strcmp(k->string, "experimentalDebugInfo"))
                return fed_errorf(FED_EFORMAT, "%s: node \"%s\": unknown field \"%s\"", g->what,
                                  name->valuestring, k->string);
        g->n[i] = (fed_tfjs_node){name->valuestring, op->valuestring, 0, NULL, i};
        g->attr[i] = attr;
        size_t k = 0;
        for (const cJSON *s = in ? in->child : NULL; s; s = s->next, k++)
            if (!cJSON_IsString(s) || !s->valuestring[0])
                return fed_errorf(FED_EFORMAT, "%s: node \"%s\": input %zu is not a node name",
                                  g->what, name->valuestring, k);
        g->n[i].ninputs = k;
    }
    g->nn = nn;
    return FED_OK;
}

/* Input arrays, the name index, input references, consumers, Const <-> weight. */
static fed_err link_graph(fed_tfjs *g) {
    const cJSON *nodes = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(g->root, "modelTopology"), "node");
    g->n_sorted = fed_calloc(g->nn ? g->nn : 1, sizeof *g->n_sorted);
    g->w_sorted = fed_calloc(g->nw ? g->nw : 1, sizeof *g->w_sorted);
    g->consumers = fed_calloc(g->nn ? g->nn : 1, sizeof *g->consumers);
    if (!g->n_sorted || !g->w_sorted || !g->consumers) return FED_ENOMEM;
    for (size_t i = 0; i < g->nn; i++) g->n_sorted[i] = i;
    for (size_t i = 0; i < g->nw; i++) g->w_sorted[i] = i;
    sort_g = g;
    qsort(g->n_sorted, g->nn, sizeof *g->n_sorted, cmp_node);
    qsort(g->w_sorted, g->nw, sizeof *g->w_sorted, cmp_weight);
    for (size_t i = 1; i < g->nn; i++)
        if (strcmp(g->n[g->n_sorted[i - 1]].name, g->n[g->n_sorted[i]].name) == 0)
            return fed_errorf(FED_EFORMAT, "%s: two nodes are called \"%s\"", g->what,
                              g->n[g->n_sorted[i]].name);
    for (size_t i = 1; i < g->nw; i++)
        if (strcmp(g->w[g->w_sorted[i - 1]].name, g->w[g->w_sorted[i]].name) == 0)
            return fed_errorf(FED_EFORMAT, "%s: two weights are called \"%s\"", g->what,
                              g->w[g->w_sorted[i]].name);
    size_t i = 0;
    for (const cJSON *e = nodes->child; e; e = e->next, i++) {
        fed_tfjs_node *n = &g->n[i];
        if (!n->ninputs) continue;
        const char **ins = fed_calloc(n->ninputs, sizeof *ins);
        if (!ins) return FED_ENOMEM;
        n->inputs = ins;
        size_t k = 0;
        for (const cJSON *s = cJSON_GetObjectItemCaseSensitive(e, "input")->child; s;
             s = s->next, k++) {
            ins[k] = s->valuestring;
            bool control = false;
            size_t j = input_node(g, s->valuestring, &control);
            if (j == SIZE_MAX)
                return fed_errorf(FED_EFORMAT, "%s: node \"%s\": input \"%s\" is not a node",
                                  g->what, n->name, s->valuestring);
            if (!control) g->consumers[j]++;
        }
    }
    for (size_t k = 0; k < g->nw; k++) {
        const fed_tfjs_node *n = fed_tfjs_node_find(g, g->w[k].name);
        if (!n || strcmp(n->op, "Const") != 0)
            return fed_errorf(FED_EFORMAT, "%s: weight \"%s\" is not a Const node of the graph",
                              g->what, g->w[k].name);
    }
    for (size_t k = 0; k < g->nn; k++)
        if (strcmp(g->n[k].op, "Const") == 0 && !fed_tfjs_weight_find(g, g->n[k].name))
            return fed_errorf(FED_EFORMAT, "%s: Const node \"%s\" has no weight in the manifest",
                              g->what, g->n[k].name);
    return FED_OK;
}

static fed_err parse_model(fed_tfjs *g, fed_pkg *pkg, const uint8_t *text, size_t len) {
    if (len > FED_TFJS_MAX_JSON)
        return fed_errorf(FED_ERANGE, "%s: %zu bytes, more than %zu MiB", g->what, len,
                          FED_TFJS_MAX_JSON >> 20);
    size_t bad = fed_utf8_bad_at((const char *)text, len);
    if (bad != len) return fed_errorf(FED_EFORMAT, "%s: byte %zu is not valid UTF-8", g->what, bad);
    if (memchr(text, 0, len)) return fed_errorf(FED_EFORMAT, "%s: holds a NUL byte", g->what);
    fed_json_hooks();
    g->root = cJSON_ParseWithLength((const char *)text, len);
    if (!g->root) {
        if (fed_json_oom()) return FED_ENOMEM;
        return fed_errorf(FED_EFORMAT, "%s: not valid JSON", g->what);
    }
    if (!cJSON_IsObject(g->root)) return fed_errorf(FED_EFORMAT, "%s: not a JSON object", g->what);
    const cJSON *format = cJSON_GetObjectItemCaseSensitive(g->root, "format");
    if (format && (!cJSON_IsString(format) || strcmp(format->valuestring, "graph-model") != 0))
        return fed_errorf(FED_EUNSUPPORTED, "%s: format %s%s%s, not a TF.js graph model", g->what,
                          cJSON_IsString(format) ? "\"" : "",
                          cJSON_IsString(format) ? format->valuestring : "(not a string)",
                          cJSON_IsString(format) ? "\"" : "");
    const cJSON *topo = cJSON_GetObjectItemCaseSensitive(g->root, "modelTopology");
    const cJSON *man = cJSON_GetObjectItemCaseSensitive(g->root, "weightsManifest");
    if (!topo || !man)
        return fed_errorf(FED_EFORMAT, "%s: no %s (not a TF.js graph model)", g->what,
                          !topo ? "\"modelTopology\"" : "\"weightsManifest\"");
    fed_err err = parse_nodes(g, topo);
    if (!err) err = parse_manifest(g, pkg, man);
    if (!err) err = link_graph(g);
    return err;
}

fed_err fed_tfjs_read(fed_tfjs **out, fed_pkg *pkg) {
    *out = NULL;
    fed_tfjs *g = fed_calloc(1, sizeof *g);
    if (!g) return FED_ENOMEM;
    fed_pkg_file_path(pkg, MODEL_JSON, g->what, sizeof g->what);
    const uint8_t *text = NULL;
    size_t len = 0;
    fed_err err = fed_pkg_read(pkg, MODEL_JSON, &text, &len);
    if (!err) err = parse_model(g, pkg, text, len);
    if (err) {
        fed_tfjs_destroy(&g);
        return err;
    }
    *out = g;
    return FED_OK;
}

void fed_tfjs_destroy(fed_tfjs **gp) {
    if (!gp || !*gp) return;
    fed_tfjs *g = *gp;
    for (size_t i = 0; i < g->nn; i++) fed_free((void *)g->n[i].inputs);
    for (size_t i = 0; i < g->ng; i++) fed_free(g->g[i].bytes);
    fed_free(g->n);
    fed_free(g->attr);
    fed_free(g->n_sorted);
    fed_free(g->consumers);
    fed_free(g->w);
    fed_free(g->w_sorted);
    fed_free(g->g);
    cJSON_Delete(g->root);
    fed_free(g);
    *gp = NULL;
}

/* ---- accessors ------------------------------------------------------------------------ */

const char *fed_tfjs_what(const fed_tfjs *g) {
    return g->what;
}

size_t fed_tfjs_num_weights(const fed_tfjs *g) {
    return g->nw;
}

const fed_tfjs_weight *fed_tfjs_weight_at(const fed_tfjs *g, size_t i) {
    return i < g->nw ? &g->w[i] : NULL;
}

const fed_tfjs_weight *fed_tfjs_weight_find(const fed_tfjs *g, const char *name) {
    size_t lo = 0, hi = g->nw;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(g->w[g->w_sorted[mid]].name, name);
        if (c == 0) return &g->w[g->w_sorted[mid]];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

float fed_tfjs_f32(const fed_tfjs_weight *w, size_t i) {
    uint32_t u = fed_load_le32(w->data + 4 * i);
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

int32_t fed_tfjs_i32(const fed_tfjs_weight *w, size_t i) {
    return (int32_t)fed_load_le32(w->data + 4 * i);
}

size_t fed_tfjs_num_groups(const fed_tfjs *g) {
    return g->ng;
}

const uint8_t *fed_tfjs_group_bytes(const fed_tfjs *g, size_t i, size_t *len) {
    *len = i < g->ng ? g->g[i].len : 0;
    return i < g->ng ? g->g[i].bytes : NULL;
}

size_t fed_tfjs_num_nodes(const fed_tfjs *g) {
    return g->nn;
}

const fed_tfjs_node *fed_tfjs_node_at(const fed_tfjs *g, size_t i) {
    return i < g->nn ? &g->n[i] : NULL;
}

const fed_tfjs_node *fed_tfjs_node_find(const fed_tfjs *g, const char *name) {
    size_t i = node_index(g, name, strlen(name));
    return i == SIZE_MAX ? NULL : &g->n[i];
}

size_t fed_tfjs_consumers(const fed_tfjs *g, const fed_tfjs_node *n) {
    return g->consumers[n->index];
}

/* ---- attributes ----------------------------------------------------------------------- */

static const cJSON *attr_of(const fed_tfjs *g, const fed_tfjs_node *n, const char *key) {
    const cJSON *a = g->attr[n->index];
    return a ? cJSON_GetObjectItemCaseSensitive(a, key) : NULL;
}

/* A TensorFlow int: a decimal string (int64 in JSON) or a number. */
static bool json_ll(const cJSON *v, long long *out) {
    if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        if (!(fabs(d) < JSON_INT_LIMIT) || d != floor(d)) return false;
        *out = (long long)d;
        return true;
    }
    if (!cJSON_IsString(v) || !v->valuestring[0]) return false;
    char *end = NULL;
    long long x = strtoll(v->valuestring, &end, 10);
    if (*end) return false;
    *out = x;
    return true;
}

bool fed_tfjs_attr_bool(const fed_tfjs *g, const fed_tfjs_node *n, const char *key, bool *out) {
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(attr_of(g, n, key), "b");
    if (!cJSON_IsBool(b)) return false;
    *out = cJSON_IsTrue(b);
    return true;
}

bool fed_tfjs_attr_int(const fed_tfjs *g, const fed_tfjs_node *n, const char *key, long long *out) {
    return json_ll(cJSON_GetObjectItemCaseSensitive(attr_of(g, n, key), "i"), out);
}

bool fed_tfjs_attr_ints(const fed_tfjs *g, const fed_tfjs_node *n, const char *key, long long *out,
                        size_t cap, size_t *count) {
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(attr_of(g, n, key), "list");
    const cJSON *is = cJSON_GetObjectItemCaseSensitive(list, "i");
    if (!cJSON_IsArray(is)) return false;
    size_t k = 0;
    for (const cJSON *v = is->child; v; v = v->next, k++) {
        long long x;
        if (!json_ll(v, &x)) return false;
        if (k < cap) out[k] = x;
    }
    *count = k;
    return true;
}

static int b64(char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

bool fed_tfjs_attr_str(const fed_tfjs *g, const fed_tfjs_node *n, const char *key, char *buf,
                       size_t cap) {
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(attr_of(g, n, key), "s");
    size_t k = 0;
    if (cap == 0) return false;
    if (cJSON_IsArray(s)) {
        for (const cJSON *v = s->child; v; v = v->next) {
            size_t byte;
            if (!json_size(v, &byte) || byte == 0 || byte > 255 || k + 1 >= cap) return false;
            buf[k++] = (char)byte;
        }
    } else if (cJSON_IsString(s)) {
        unsigned acc = 0;
        int bits = 0;
        for (const char *c = s->valuestring; *c && *c != '='; c++) {
            int v = b64(*c);
            if (v < 0) return false;
            acc = (acc << 6) | (unsigned)v;
            bits += 6;
            if (bits >= 8) {
                bits -= 8;
                char byte = (char)((acc >> bits) & 0xff);
                if (byte == 0 || k + 1 >= cap) return false;
                buf[k++] = byte;
            }
        }
    } else {
        return false;
    }
    buf[k] = '\0';
    return true;
}
