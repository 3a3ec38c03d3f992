/* A model: an architecture plus ALL its parameters in one contiguous float32 buffer,
 * viewed through a table of named tensors (as in llm.c). Gradients use the very same
 * layout, and so will optimizer state, deltas and aggregates: a weight delta is a
 * difference of two flat buffers over the trainable ranges, federated averaging is a
 * weighted sum of flat vectors, and a model file is a header plus raw bytes.
 *
 * Tensor names and layouts follow torch.nn.Sequential: layer i owns "i.weight" and
 * "i.bias"; a linear weight is (out, in), a conv weight (OC, C, K, K).
 *
 * A model also records the activations of its last forward pass (in the caller's
 * arena) for the backward pass, so one model serves one thread at a time; simulation
 * gives each worker its own. Data from outside (token ids) is validated here; the
 * kernels underneath only assert. */
#ifndef FED_MODEL_H
#define FED_MODEL_H

#include "core/arch.h"
#include "core/arena.h"
#include "core/err.h"
#include "core/rng.h"

#include <stdbool.h>
#include <stddef.h>

/* Longest tensor name, including the terminating NUL. */
#define FED_TENSOR_NAME_MAX 64

/* A named view into the flat parameter buffer. */
typedef struct fed_tensor {
    char name[FED_TENSOR_NAME_MAX]; /* "3.weight" */
    int ndim;                       /* 1..4 */
    size_t shape[4];                /* PyTorch layout, outermost first */
    size_t offset;                  /* first element, in floats from the buffer start */
    size_t numel;                   /* elements */
    size_t layer;                   /* index of the owning layer in the architecture */
    bool trainable;                 /* false: frozen, never updated nor sent */
} fed_tensor;

typedef enum fed_mode {
    FED_MODE_EVAL = 0,  /* dropout off, nothing needed for backward */
    FED_MODE_TRAIN = 1, /* dropout on, activations kept for fed_model_backward */
} fed_mode;

typedef struct fed_model fed_model;

/* A model for arch (copied) with zeroed parameters; call fed_model_init or load
 * weights next. All tensors start trainable. */
fed_err fed_model_new(fed_model **out, const fed_arch *arch) FED_MUST_USE;
/* NULL-safe; sets *m to NULL. */
void fed_model_destroy(fed_model **m);

/* Seeded initialisation as each layer's init field says; tensor i draws from stream i
 * of seed, so the same seed gives the same bits everywhere. */
void fed_model_init(fed_model *m, uint64_t seed);

const fed_arch *fed_model_arch(const fed_model *m);
size_t fed_model_num_tensors(const fed_model *m);
const fed_tensor *fed_model_tensor(const fed_model *m, size_t i);
/* The tensor called name, or NULL. */
const fed_tensor *fed_model_find(const fed_model *m, const char *name);

/* The flat buffers: fed_model_num_params floats each. */
float *fed_model_params(fed_model *m);
const float *fed_model_params_const(const fed_model *m);
float *fed_model_grads(fed_model *m);
size_t fed_model_num_params(const fed_model *m);
/* Elements in trainable tensors. */
size_t fed_model_num_trainable(const fed_model *m);
/* Floats every layer's output holds for one example in a forward pass (a sequence at its
 * full length): what a batch's activations cost per example. */
size_t fed_model_activation_floats(const fed_model *m);
/* A site's update: out = local - global over m's trainable tensors in manifest order
 * (fed_model_num_trainable floats), local and global flat parameter buffers of m's
 * layout. False when a value of out is not finite (out is filled all the same). */
bool fed_model_delta(const fed_model *m, const float *local, const float *global, float *out);

/* Floats per example entering and leaving the network. */
size_t fed_model_input_size(const fed_model *m);
size_t fed_model_output_size(const fed_model *m);

/* Marks tensor i trainable or frozen (freezing zeroes its gradient). */
void fed_model_set_trainable(fed_model *m, size_t i, bool trainable);
/* Sets the flag of every tensor whose name matches the shell glob (fnmatch), e.g.
 * "0.*" for all of layer 0 or "*.bias"; returns how many matched. */
size_t fed_model_set_trainable_glob(fed_model *m, const char *glob, bool trainable);
/* The one parser of the --freeze / --unfreeze option text (train, coordinator, sim):
 * spec is a comma-separated list of shell globs, each trimmed of spaces, and a bare layer
 * index N means "N.*" (all of layer N), so "0,*.bias" is layer 0 and every bias. Every
 * tensor matched by a pattern gets the flag `trainable`; *matched (may be NULL) gets how
 * many distinct tensors that was. NULL or "" is no pattern (FED_OK, 0 matched).
 * FED_EINVAL naming the pattern when one is empty, longer than 255 characters or matches
 * no tensor (a typo must not train the wrong tensors); m is unchanged on error. */
fed_err fed_model_set_trainable_spec(fed_model *m, const char *spec, bool trainable,
                                     size_t *matched) FED_MUST_USE;

/* A deep copy of m: architecture, parameters and trainable flags (not gradients). */
fed_err fed_model_clone(fed_model **out, const fed_model *m) FED_MUST_USE;

/* Sets the probability of every dropout layer to p in [0, 1) (fine-tuning often raises
 * or removes the pre-training dropout); returns how many layers there are. */
size_t fed_model_set_dropout(fed_model *m, float p);

/* A copy of m whose last linear layer (the head) has `classes` outputs, freshly
 * initialised from seed (salted: not the head fed_model_init(m, seed) gave); every other
 * tensor and its trainable flag is copied. See
 * fed_arch_new_head for which architectures qualify (FED_EINVAL otherwise). */
fed_err fed_model_new_head(fed_model **out, const fed_model *m, size_t classes,
                           uint64_t seed) FED_MUST_USE;

/* LoRA fine-tuning: a copy of m with adapters on the weights fed_arch_add_lora selects
 * (rank, alpha, targets, skip as there). Every tensor of m is copied; then the base
 * tensors are frozen and the adapters trainable, except the tensors of layer `skip`,
 * which keep their flag (a new head trains whole). A is drawn from seed as PEFT does
 * (uniform in +-1/sqrt(in)), B is zero, so the copy computes exactly what m does. */
fed_err fed_model_add_lora(fed_model **out, const fed_model *m, size_t rank, float alpha,
                           const char *targets, size_t skip, uint64_t seed,
                           size_t *matched) FED_MUST_USE;
/* Folds every adapter into its weight, W += (alpha / rank) B A, and returns the model
 * without adapters (trainable flags of the other tensors kept). A model with none is
 * copied as it is. */
fed_err fed_model_merge_lora(fed_model **out, const fed_model *m) FED_MUST_USE;

/* Copies all parameters of src into m; FED_ESHAPE unless the layouts are identical. */
fed_err fed_model_copy_params(fed_model *m, const fed_model *src) FED_MUST_USE;

/* Runs x (N, input_size) through the network; *out (N, output_size) lives in the arena.
 * In train mode dropout draws from rng (which may be NULL in eval mode) and activations
 * are kept for fed_model_backward. FED_ERANGE if an embedding id is not an integer in
 * [0, vocab); FED_ENOMEM if the arena cannot grow. */
fed_err fed_model_forward(fed_model *m, fed_arena *a, const float *x, size_t N, fed_mode mode,
                          fed_rng *rng, const float **out) FED_MUST_USE;
/* Back-propagates dout (N, output_size) through the last train-mode forward (same arena,
 * not reset in between), ACCUMULATING into the gradients of trainable tensors. Layers
 * with nothing trainable at or below them are skipped entirely. */
fed_err fed_model_backward(fed_model *m, fed_arena *a, const float *dout) FED_MUST_USE;
/* Zeroes the gradient buffer. Only the trainable tensors' part costs anything: a frozen
 * tensor's gradient is always zero (freezing zeroes it, backward never writes it), which
 * makes this cheap for a large frozen model with a small trainable head or adapters. */
void fed_model_zero_grad(fed_model *m);
/* Frees the gradient buffer of a model that will never train again (the coordinator's
 * global model, a model only evaluated): half its memory. Backward, optimizers and
 * fed_model_grads must not be used on it afterwards. */
void fed_model_drop_grads(fed_model *m);

/* Floating-point operations of one forward pass of one example (multiply-add = 2);
 * backward costs about twice as much. For benchmarks. */
double fed_model_forward_flops(const fed_model *m);
/* FLOPs of one training step per example as the backward pass really runs it: forward,
 * the weight gradient of every trainable layer, and the input gradient of every layer
 * above the lowest trainable one (the first layer's input gradient is never computed). */
double fed_model_train_flops(const fed_model *m);

#endif
