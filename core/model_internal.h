/* Internal to core/model*.c: the model's runtime structures, shared by model.c (the
 * table, the sequential layers, the passes) and model_seq.c (the sequence layers). */
#ifndef FED_MODEL_INTERNAL_H
#define FED_MODEL_INTERNAL_H

#include "core/arena.h"
#include "core/kernels.h"
#include "core/model.h"

#include <stdbool.h>
#include <stdint.h>

/* Runtime view of one layer: its spec, shapes, tensors and the tape of the last
 * forward pass. */
typedef struct layer_rt {
    fed_layer_spec spec; /* copy of the architecture's layer */
    fed_shape in, out;   /* per-example shapes */
    size_t in_numel;     /* floats per example entering */
    size_t out_numel;    /* floats per example leaving */
    size_t rows;         /* linear, layernorm: rows per example (in_numel / last dim) */
    long w, b;           /* tensor indices of weight and bias, -1 if none (attention: qkv) */
    long w2, b2;         /* attention: out.weight, out.bias; residual end: proj.* */
    long la[2], lb[2];   /* LoRA A and B of the main (w) and second (w2) weight, or -1 */
    float lscale;        /* LoRA alpha / rank */
    bool seq_in;         /* the input is a padded sequence: runs at the batch's length */
    bool seq_out;        /* the output is one */
    size_t in_eff;       /* in_numel, out_numel and rows at the last forward's length */
    size_t out_eff;
    size_t rows_eff;
    fed_conv_geom geom; /* conv2d geometry */
    /* tape of the last forward, in the caller's arena */
    const float *x;     /* (N, in_numel) input */
    float *y;           /* (N, out_numel) output (may alias x for pass-through layers) */
    float *s1, *s2;     /* dropout mask (N, in_numel); layernorm mean, rstd (N*rows) */
    int32_t *idx;       /* maxpool argmax (N, out_numel); embedding ids (N, in_numel) */
    float *qkv;         /* attention: projections (N, Tb, 3D) */
    float *att;         /* attention: heads' outputs (N, Tb, D) */
    float *prob;        /* attention: softmax weights (N, H, Tb, Tb) */
    float *dskip;       /* residual: gradient of the skip path, left by its end */
    const float *table; /* positions (sinusoidal): (T, D), owned by the model */
    float *lt[2];       /* LoRA: x A^T of the main and second weight (rows, r) */
} layer_rt;

struct fed_model {
    fed_arch *arch;      /* owned copy */
    size_t nlayers;      /* entries in layers */
    layer_rt *layers;    /* (nlayers) */
    size_t ntensors;     /* entries in tensors */
    fed_tensor *tensors; /* (ntensors) */
    size_t nparams;      /* floats in params and grads */
    float *params;       /* (nparams) */
    float *grads;        /* (nparams) */
    size_t batch;        /* N of the last forward */
    bool tape;           /* last forward ran in train mode and can be back-propagated */
    size_t T;            /* sequence length of a padded input (0: no padded embedding) */
    size_t Tb;           /* rows per example of the last forward's sequence buffers (T when
                            not padded; see model_seq.c) */
    int32_t *len;        /* the last forward's lengths (N), in its arena; NULL: all T */
    size_t *off;         /* the last forward's first row of each example (N), in its arena */
    size_t Tmax;         /* the last forward's longest sequence */
    float *tables;       /* sinusoidal signals of the positions layers */
};

#define ALLOC_OR_FAIL(ptr, expr)                                                                   \
    do {                                                                                           \
        if (!((ptr) = (expr))) return FED_ENOMEM;                                                  \
    } while (0)

static inline const float *fed__model_tensor(const fed_model *m, long ti) {
    return ti < 0 ? NULL : m->params + m->tensors[ti].offset;
}

/* The gradient slot of tensor ti, or NULL when it has none or is frozen. */
static inline float *fed__model_grad(fed_model *m, long ti) {
    if (ti < 0 || !m->tensors[ti].trainable) return NULL;
    return m->grads + m->tensors[ti].offset;
}

/* y = x W^T + b for weight k of L (0: w and b, 1: w2 and b2), plus its LoRA update
 * scale * (x A^T) B^T when it has adapters (x A^T is kept for backward). */
fed_err fed__model_lin_forward(fed_model *m, layer_rt *L, int k, fed_arena *a, float *y,
                               const float *x, size_t rows, size_t C, size_t O);
/* Its backward: dx (may be NULL) overwritten, gradients of trainable tensors accumulated. */
fed_err fed__model_lin_backward(fed_model *m, layer_rt *L, int k, fed_arena *a, float *dx,
                                const float *dy, const float *x, size_t rows, size_t C, size_t O);

/* Forward and backward of the sequence layers (model_seq.c): padded embedding,
 * positions, attention, residual and its end, meanpool, l2norm. */
fed_err fed__model_seq_forward(fed_model *m, layer_rt *L, size_t l, fed_arena *a, size_t N);
/* *dx gets the input gradient when need_dx (NULL otherwise, or for token ids). */
fed_err fed__model_seq_backward(fed_model *m, layer_rt *L, fed_arena *a, size_t N, const float *dy,
                                bool need_dx, float **dx);
/* Builds the sinusoidal tables (fed_model_new). */
fed_err fed__model_seq_tables(fed_model *m);

#endif
