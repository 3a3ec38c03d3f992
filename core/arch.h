/* Architectures described as data. A spec is JSON, either an object
 *
 *   {"input": [1, 28, 28],
 *    "layers": [{"type": "conv2d", "out": 32, "k": 5, "pad": 2}, {"type": "relu"}, ...]}
 *
 * or an array whose first element is {"type": "input", "shape": [...]}, or the name of
 * a preset ("fedavg-2nn", "fedavg-cnn"). Parsing checks every field and every shape
 * and says which layer and field is wrong; unknown keys are errors, so a typo is never
 * silently ignored. fed_arch_to_json writes the canonical form (every field explicit)
 * that model files carry in their metadata.
 *
 * Layers, their fields (defaults in brackets) and what they do to the per-example
 * shape:
 *   linear      out, bias [true], init [kaiming]     (..., C) -> (..., out)
 *   conv2d      out, k, stride [1], pad [0], bias [true], init [kaiming]
 *                                                    (C, H, W) -> (out, OH, OW)
 *   maxpool2d   k, stride [k]                        (C, H, W) -> (C, OH, OW)
 *   avgpool2d   k, stride [k]                        (C, H, W) -> (C, OH, OW)
 *   globalavgpool                                    (C, H, W) -> (C, 1, 1)
 *   flatten                                          any -> (numel)
 *   relu, gelu, tanh, sigmoid                        same shape
 *   dropout     p [0.5]                              same shape
 *   layernorm   eps [1e-5]                           same shape, normalises the last dim
 *   embedding   vocab, dim, init [normal], pad [false]
 *                                                    (T) of token ids -> (T, dim)
 * Transformer layers (a "sequence" is a (T, D) shape):
 *   positions   kind ["sinusoidal"] or "learned"     adds a position signal, same shape
 *   attention   heads, out [D], causal [false], bias [true], init [xavier]
 *                                                    (T, D) -> (T, out): multi-head
 *                                                    self-attention, tensors qkv.* (3D, D)
 *                                                    and out.* (out, D)
 *   residual    layers [...], proj [false], init [xavier]
 *                                                    x -> layers(x) + x, or + proj(x) (a
 *                                                    linear map, tensors proj.*) when the
 *                                                    branch changes the width
 *   meanpool                                         (T, D) -> (D): mean over the valid
 *                                                    positions
 *   l2norm      eps [1e-12]                          x / sqrt(max(sum x^2, eps))
 *   lmhead      tie                                  (..., D) -> (..., V): logits x E^T
 *                                                    against the table E (V, D) of the
 *                                                    embedding layer named by tie (an
 *                                                    earlier layer of width D); no tensor
 *                                                    of its own: its gradient adds into E's
 * With "pad": true an embedding takes padded token sequences: ids are followed by -1
 * up to T (at least one id per example), attention ignores the padded positions and
 * meanpool averages over the others; when a meanpool closes the sequence, padding costs
 * no computation (the sentences of a batch are packed back to back, core/model_seq.c).
 * Layers between such an embedding and meanpool must be sequence layers (no flatten,
 * convolution or pooling).
 *
 * Every layer may carry "name": its tensors are called "<name>.weight" etc. The default
 * name is the layer's position, as PyTorch names nn.Sequential children: "3" at the top,
 * "2.1" for the second layer inside residual "2". Names are unique, at most
 * FED_LAYER_NAME_MAX - 1 characters of [A-Za-z0-9_.-].
 *
 * A layer whose weights carry LoRA adapters has "lora": {"rank": r, "alpha": a, "on":
 * [...]} (on: "weight" for linear and a 1x1 conv2d; "qkv" and/or "out" for
 * attention; "proj" for a residual block); fed_arch_add_lora writes it.
 *
 * init is one of "kaiming" (He uniform, bias 0), "xavier" (Glorot uniform, bias 0),
 * "torch" (PyTorch's default: U(+-1/sqrt(fan_in)) for weight and bias), "gpt2" (N(0,
 * 0.02^2) weights and zero biases, as GPT-2: an embedding tied to an lmhead starts with
 * small logits) or, for embeddings, "normal" (N(0, 1), as PyTorch). */
#ifndef FED_ARCH_H
#define FED_ARCH_H

#include "core/err.h"

#include <stdbool.h>
#include <stddef.h>

/* Most dimensions a per-example shape may have. */
#define FED_MAX_DIMS 3
/* Upper bound on any single dimension or parameter count from a spec: absurd sizes are
 * errors, not allocations. */
#define FED_MAX_DIM_SIZE ((size_t)1 << 28)

/* Upper bound on the parameters of a whole architecture (2^34 floats = 64 GiB). */
#define FED_MAX_PARAMS ((size_t)1 << 34)

typedef enum fed_layer_kind {
    FED_LAYER_LINEAR,
    FED_LAYER_CONV2D,
    FED_LAYER_MAXPOOL2D,
    FED_LAYER_AVGPOOL2D,
    FED_LAYER_GLOBALAVGPOOL,
    FED_LAYER_FLATTEN,
    FED_LAYER_RELU,
    FED_LAYER_GELU,
    FED_LAYER_TANH,
    FED_LAYER_SIGMOID,
    FED_LAYER_DROPOUT,
    FED_LAYER_LAYERNORM,
    FED_LAYER_EMBEDDING,
    FED_LAYER_POSITIONS,
    FED_LAYER_ATTENTION,
    FED_LAYER_RESIDUAL,     /* opens a residual block: passes x through, keeps it */
    FED_LAYER_RESIDUAL_END, /* closes it (internal, never in a spec): adds x or proj(x) */
    FED_LAYER_MEANPOOL,
    FED_LAYER_L2NORM,
    FED_LAYER_LMHEAD, /* tied output layer: logits = x E^T of an embedding's table E */
} fed_layer_kind;

/* Longest layer name, including the terminating NUL. */
#define FED_LAYER_NAME_MAX 40

typedef enum fed_pos_kind {
    FED_POS_SINUSOIDAL, /* tensor2tensor's timing signal: sin | cos halves, no tensor */
    FED_POS_LEARNED,    /* a (T, D) tensor "weight" */
} fed_pos_kind;

typedef enum fed_init {
    FED_INIT_KAIMING,
    FED_INIT_XAVIER,
    FED_INIT_TORCH,
    FED_INIT_NORMAL,
    FED_INIT_GPT2,
} fed_init;

/* Shape of one example (the batch dimension is not part of it). */
typedef struct fed_shape {
    int ndim;               /* 1..FED_MAX_DIMS */
    size_t d[FED_MAX_DIMS]; /* sizes, d[0] outermost */
} fed_shape;

/* One layer as the spec gives it; fields a kind does not use are zero. */
typedef struct fed_layer_spec {
    fed_layer_kind kind;           /* what the layer computes */
    size_t out;                    /* linear: output features; conv2d: output channels */
    size_t k;                      /* conv2d, pools: window size (k x k) */
    size_t stride;                 /* conv2d, pools: window step */
    size_t pad;                    /* conv2d: zero padding on each side */
    bool bias;                     /* linear, conv2d: has a bias tensor */
    fed_init init;                 /* linear, conv2d, embedding: weight initialisation */
    float p;                       /* dropout: probability of zeroing an element */
    float eps;                     /* layernorm: added to the variance */
    size_t vocab;                  /* embedding: number of rows (token ids 0..vocab-1) */
    size_t dim;                    /* embedding: row width */
    bool padded;                   /* embedding: -1 pads sequences (variable length) */
    size_t heads;                  /* attention: number of heads (divides D) */
    bool causal;                   /* attention: position t sees positions <= t only */
    fed_pos_kind pos;              /* positions: which signal */
    bool proj;                     /* residual: the skip path is a linear map */
    size_t pair;                   /* residual: index of its end; residual end: of its residual */
    char name[FED_LAYER_NAME_MAX]; /* tensor name prefix */
    size_t lora_rank;              /* LoRA adapters' rank r (0: none) */
    float lora_alpha;              /* their scale is alpha / r */
    unsigned lora_on;              /* which weights have them: FED_LORA_MAIN, FED_LORA_SECOND */
    char tie[FED_LAYER_NAME_MAX];  /* lmhead: name of the embedding whose table it uses */
    size_t tied;                   /* lmhead: that embedding's layer index */
} fed_layer_spec;

/* The weights of a layer that take LoRA adapters: the main one (linear "weight",
 * attention "qkv.weight") and the second (attention "out.weight", a residual block's
 * "proj.weight", which its end layer owns). */
#define FED_LORA_MAIN   1u
#define FED_LORA_SECOND 2u
/* Largest adapter rank accepted. */
#define FED_LORA_MAX_RANK 1024

typedef struct fed_arch fed_arch;

/* Parses a JSON spec or a preset name. On error, fed_errmsg() names the layer and field,
 * e.g. "layer 3 (conv2d): field \"k\": must be an integer in [1, 268435456]". */
fed_err fed_arch_parse(fed_arch **out, const char *spec) FED_MUST_USE;
/* A deep copy. */
fed_err fed_arch_clone(fed_arch **out, const fed_arch *a) FED_MUST_USE;
/* NULL-safe; sets *a to NULL. */
void fed_arch_destroy(fed_arch **a);

/* A copy of a whose last linear layer has `classes` outputs (the "new head" of
 * fine-tuning); shapes and parameter counts are re-derived. FED_EINVAL when a has no
 * linear layer or a layer after it has parameters or changes the feature count
 * (only activations, dropout and flatten may follow the head). A sentence encoder,
 * whose last layer is l2norm, keeps all its layers and gets a new linear layer "head"
 * appended. *head receives the head's layer index. */
fed_err fed_arch_new_head(fed_arch **out, const fed_arch *a, size_t classes,
                          size_t *head) FED_MUST_USE;
/* LoRA (Hu et al. 2021): a copy of a where every weight whose tensor name matches a
 * glob of `targets` (comma-separated, trimmed; NULL or "" means every weight that takes
 * adapters) gets a low-rank update (alpha / rank) B A, with tensors "<w>.lora_A"
 * (rank, in) and "<w>.lora_B" (out, rank) next to weight "<w>.weight". Weights of layer
 * `skip` (SIZE_MAX: none) are left alone (a new head trains whole). Only linear-type
 * weights take adapters (linear, a 1x1 conv2d, attention, a residual projection). FED_EINVAL when a
 * glob matches no such weight, a matched weight has adapters already, rank is outside
 * [1, FED_LORA_MAX_RANK] or alpha is not positive. *matched (may be NULL): weights. */
fed_err fed_arch_add_lora(fed_arch **out, const fed_arch *a, size_t rank, float alpha,
                          const char *targets, size_t skip, size_t *matched) FED_MUST_USE;
/* A copy of a without any adapter. */
fed_err fed_arch_drop_lora(fed_arch **out, const fed_arch *a) FED_MUST_USE;
/* Weights of a with adapters. */
size_t fed_arch_num_lora(const fed_arch *a);

/* A language model: layer 0 is an embedding of token ids (T), the last layer an lmhead
 * tied to it and no layer between pools the sequence, so the output is (T, V) logits
 * and position t predicts input token t + 1 (core/train.h: the next-token loss). */
bool fed_arch_is_lm(const fed_arch *a);

/* Sets the probability of every dropout layer to p in [0, 1); returns how many there
 * are. */
size_t fed_arch_set_dropout(fed_arch *a, float p);

/* The canonical JSON (one line). The caller frees *json with fed_free. */
fed_err fed_arch_to_json(const fed_arch *a, char **json) FED_MUST_USE;

fed_shape fed_arch_input_shape(const fed_arch *a);
size_t fed_arch_num_layers(const fed_arch *a);
/* Parameters of all layers (at most FED_MAX_PARAMS). */
size_t fed_arch_num_params(const fed_arch *a);
const fed_layer_spec *fed_arch_layer(const fed_arch *a, size_t i);
/* Shape entering layer i; i == num_layers gives the network's output shape. */
fed_shape fed_arch_shape_at(const fed_arch *a, size_t i);

/* Product of the dimensions. */
size_t fed_shape_numel(const fed_shape *s);
/* Name of a layer kind as written in specs ("conv2d"). */
const char *fed_layer_kind_name(fed_layer_kind kind);
/* Names of the presets, NULL-terminated. */
const char *const *fed_arch_presets(void);

#endif
