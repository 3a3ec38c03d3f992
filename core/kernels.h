/* Numeric kernels: the forward and backward passes of every layer, as plain void
 * functions in the llm.c convention: outputs first, then buffers saved for backward,
 * then inputs, weights and sizes. Each buffer carries its shape in a comment.
 *
 * Layouts follow PyTorch so models move to and from it unchanged: activations are
 * row-major (N, ...), images NCHW, a linear weight is (OC, C), a conv weight
 * (OC, C, K, K). Backward kernels overwrite dinp and ACCUMULATE into weight gradients
 * (dw, db), so gradients can be summed over micro-batches; any gradient pointer may be
 * NULL to skip it (a frozen weight, or the first layer's input gradient).
 *
 * BLAS-backed kernels (linear, conv2d) have a naive reference with the suffix _ref,
 * written as the textbook loops; the tests hold the two to each other. Kernels assert
 * their preconditions; validating data from outside is the caller's job (model.c).
 * Nothing here allocates: scratch buffers come from the caller (usually an arena). */
#ifndef FED_KERNELS_H
#define FED_KERNELS_H

#include "core/rng.h"

#include <stddef.h>
#include <stdint.h>

/* ---- linear: out = inp @ w^T + b ------------------------------------------------- */

void fed_linear_forward(float *out,       /* (N, OC) */
                        const float *inp, /* (N, C) */
                        const float *w,   /* (OC, C) */
                        const float *b,   /* (OC) or NULL */
                        size_t N, size_t C, size_t OC);
void fed_linear_forward_ref(float *out, const float *inp, const float *w, const float *b, size_t N,
                            size_t C, size_t OC);
void fed_linear_backward(float *dinp,       /* (N, C) or NULL, overwritten */
                         float *dw,         /* (OC, C) or NULL, accumulated */
                         float *db,         /* (OC) or NULL, accumulated */
                         const float *dout, /* (N, OC) */
                         const float *inp,  /* (N, C) */
                         const float *w,    /* (OC, C) */
                         size_t N, size_t C, size_t OC);
void fed_linear_backward_ref(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                             const float *w, size_t N, size_t C, size_t OC);

/* ---- conv2d: square kernel, zero padding, im2col + gemm -------------------------- */

/* Geometry of one convolution; fill with fed_conv_geom_init. */
typedef struct fed_conv_geom {
    size_t C, H, W; /* input channels, height, width */
    size_t OC;      /* output channels */
    size_t K;       /* kernel size (K x K) */
    size_t stride;  /* step between windows, >= 1 */
    size_t pad;     /* zeros added on every side */
    size_t OH, OW;  /* output height, width (derived) */
} fed_conv_geom;

/* Derives OH, OW; returns 0 when the geometry is impossible (window larger than the
 * padded input, zero sizes or stride), 1 otherwise. */
int fed_conv_geom_init(fed_conv_geom *g, size_t C, size_t H, size_t W, size_t OC, size_t K,
                       size_t stride, size_t pad);
/* Floats of the per-example column buffer: C*K*K * OH*OW. */
size_t fed_conv_col_size(const fed_conv_geom *g);

/* col: (C*K*K, OH*OW) for one example; img: (C, H, W). */
void fed_im2col(float *col, const float *img, const fed_conv_geom *g);
/* img (C, H, W) += col scattered back: the adjoint of fed_im2col. */
void fed_col2im(float *img, const float *col, const fed_conv_geom *g);

/* The grouped forms run G examples at a time as one GEMM per group: columns
 * (C*K*K, G*OH*OW), output (OC, G*OH*OW) scattered to NCHW with the bias, and in
 * backward dy gathered the same way (db summed in that pass), dw one GEMM over the
 * group, dinp one GEMM and then col2im per example. scratch holds
 * fed_conv_scratch_size(g, G) floats; G = 1 is the per-example loop (scratch = one
 * column buffer). fed_conv_group picks G for a batch of N (whole batch when the
 * buffers fit in 1 MB, else even groups). Results equal the G = 1 path up to the
 * order of float sums. */
size_t fed_conv_group(const fed_conv_geom *g, size_t N);
/* Examples per group for N examples of per floats of buffers each within budget floats:
 * N when all fit, else even groups (64 with room for 53 run as 32 + 32, not 53 + 11); at
 * least 1. */
size_t fed_conv_even_group(size_t N, size_t per, size_t budget);
size_t fed_conv_scratch_size(const fed_conv_geom *g, size_t G);
void fed_conv2d_forward_grouped(float *out, float *scratch, const float *inp, const float *w,
                                const float *b, size_t N, size_t G, const fed_conv_geom *g);
void fed_conv2d_backward_grouped(float *dinp, float *dw, float *db, float *scratch,
                                 const float *dout, const float *inp, const float *w, size_t N,
                                 size_t G, const fed_conv_geom *g);

void fed_conv2d_forward(float *out,       /* (N, OC, OH, OW) */
                        float *col,       /* scratch (C*K*K, OH*OW) */
                        const float *inp, /* (N, C, H, W) */
                        const float *w,   /* (OC, C, K, K) */
                        const float *b,   /* (OC) or NULL */
                        size_t N, const fed_conv_geom *g);
void fed_conv2d_forward_ref(float *out, const float *inp, const float *w, const float *b, size_t N,
                            const fed_conv_geom *g);
void fed_conv2d_backward(float *dinp,       /* (N, C, H, W) or NULL, overwritten */
                         float *dw,         /* (OC, C, K, K) or NULL, accumulated */
                         float *db,         /* (OC) or NULL, accumulated */
                         float *col,        /* scratch (C*K*K, OH*OW) */
                         const float *dout, /* (N, OC, OH, OW) */
                         const float *inp,  /* (N, C, H, W) */
                         const float *w,    /* (OC, C, K, K) */
                         size_t N, const fed_conv_geom *g);
void fed_conv2d_backward_ref(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                             const float *w, size_t N, const fed_conv_geom *g);

/* ---- conv2d by Winograd F(2x2, 5x5): K = 5, stride 1, pad 2 (kernels_wino.c) -------
 * 6x6 input tiles (V = B^T d B) times the transformed weights (U = G g G^T) as 36
 * GEMMs (OUT x IN) @ (IN x tiles) per group of G examples, 2x2 outputs per tile
 * (Y = A^T M A); odd H or W pad the last tiles with zeros. The input gradient of such
 * a convolution is one too (dout with the kernel rotated 180 degrees, C and OC
 * swapped), and the weight gradient goes through the same transforms. Results match
 * the direct convolution up to fp32 rounding, about 4e-6 (forward, input gradient) and
 * 1e-5 (weight gradient) of the tensor's largest value against im2col's ~1e-7: the
 * transforms scale by up to 16 and 1/24. scratch holds fed_conv_wino_scratch_size(g, G)
 * floats; fed_conv_wino_group picks G (V and M of a group within 1 MB, at least one
 * example). */
int fed_conv_wino_fits(const fed_conv_geom *g); /* K == 5 && stride == 1 && pad == 2 */
size_t fed_conv_wino_group(const fed_conv_geom *g, size_t N);
size_t fed_conv_wino_scratch_size(const fed_conv_geom *g, size_t G);
void fed_conv2d_forward_wino(float *out, float *scratch, const float *inp, const float *w,
                             const float *b, size_t N, size_t G, const fed_conv_geom *g);
void fed_conv2d_backward_data_wino(float *dinp,       /* (N, C, H, W), overwritten */
                                   float *scratch,    /* fed_conv_wino_scratch_size */
                                   const float *dout, /* (N, OC, H, W) */
                                   const float *w,    /* (OC, C, 5, 5) */
                                   size_t N, size_t G, const fed_conv_geom *g);
/* dw (OC, C, 5, 5) and db (OC), either may be NULL, accumulated: dU = sum over tiles
 * of (A dY A^T) .* (B^T d B) as 36 GEMMs (OC x tiles) @ (tiles x C), dw += G^T dU G. */
void fed_conv2d_backward_filter_wino(float *dw, float *db, float *scratch, const float *dout,
                                     const float *inp, size_t N, size_t G, const fed_conv_geom *g);
/* The 1-D F(2, 5) the 2-D one is built from: y[i] = sum_k g[k] d[i + k], i = 0, 1. */
void fed_wino25_1d(float y[2], const float d[6], const float g[5]);

/* ---- pooling: K x K windows, stride S, no padding; OH = (H - K) / S + 1 ------------ */

void fed_maxpool2d_forward(float *out,       /* (N, C, OH, OW) */
                           int32_t *argmax,  /* (N, C, OH, OW) index into the H*W plane */
                           const float *inp, /* (N, C, H, W) */
                           size_t N, size_t C, size_t H, size_t W, size_t K, size_t S);
void fed_maxpool2d_backward(float *dinp,           /* (N, C, H, W), overwritten */
                            const float *dout,     /* (N, C, OH, OW) */
                            const int32_t *argmax, /* (N, C, OH, OW) */
                            size_t N, size_t C, size_t H, size_t W, size_t K, size_t S);
void fed_avgpool2d_forward(float *out,       /* (N, C, OH, OW) */
                           const float *inp, /* (N, C, H, W) */
                           size_t N, size_t C, size_t H, size_t W, size_t K, size_t S);
void fed_avgpool2d_backward(float *dinp,       /* (N, C, H, W), overwritten */
                            const float *dout, /* (N, C, OH, OW) */
                            size_t N, size_t C, size_t H, size_t W, size_t K, size_t S);

/* Mean over each H*W plane: (N, C, H, W) -> (N, C); HW = H*W. */
void fed_globalavgpool_forward(float *out, const float *inp, size_t N, size_t C, size_t HW);
void fed_globalavgpool_backward(float *dinp, const float *dout, size_t N, size_t C, size_t HW);

/* ---- elementwise activations (n = all elements of the batch) ---------------------- */

void fed_relu_forward(float *out, const float *inp, size_t n);
void fed_relu_backward(float *dinp, const float *dout, const float *inp, size_t n);
/* Exact GELU, x * Phi(x), as PyTorch's nn.GELU() default. */
void fed_gelu_forward(float *out, const float *inp, size_t n);
void fed_gelu_backward(float *dinp, const float *dout, const float *inp, size_t n);
/* tanh and sigmoid backward use the saved output. */
void fed_tanh_forward(float *out, const float *inp, size_t n);
void fed_tanh_backward(float *dinp, const float *dout, const float *out, size_t n);
void fed_sigmoid_forward(float *out, const float *inp, size_t n);
void fed_sigmoid_backward(float *dinp, const float *dout, const float *out, size_t n);

/* Inverted dropout: keeps each element with probability 1-p and scales it by 1/(1-p),
 * so evaluation needs no rescaling. mask holds 0 or 1/(1-p) per element. */
void fed_dropout_forward(float *out,  /* (n) */
                         float *mask, /* (n) saved for backward */
                         const float *inp, size_t n, float p, fed_rng *rng);
void fed_dropout_backward(float *dinp, const float *dout, const float *mask, size_t n);

/* ---- layer norm over the last dimension, with affine weight and bias --------------- */

void fed_layernorm_forward(float *out,       /* (N, C) */
                           float *mean,      /* (N) saved */
                           float *rstd,      /* (N) saved: 1 / sqrt(var + eps) */
                           const float *inp, /* (N, C) */
                           const float *w,   /* (C) */
                           const float *b,   /* (C) */
                           size_t N, size_t C, float eps);
void fed_layernorm_backward(float *dinp,       /* (N, C), overwritten */
                            float *dw,         /* (C) or NULL, accumulated */
                            float *db,         /* (C) or NULL, accumulated */
                            const float *dout, /* (N, C) */
                            const float *inp, const float *mean, const float *rstd, const float *w,
                            size_t N, size_t C);

/* ---- embedding lookup ---------------------------------------------------------------- */

/* ids must lie in [0, V): the caller validates them. */
void fed_embedding_forward(float *out,         /* (N, D) */
                           const int32_t *ids, /* (N) */
                           const float *table, /* (V, D) */
                           size_t N, size_t D);
void fed_embedding_backward(float *dtable,      /* (V, D), accumulated */
                            const float *dout,  /* (N, D) */
                            const int32_t *ids, /* (N) */
                            size_t N, size_t D);

/* ---- sequences: attention, pooling, positions ------------------------------------------ */

/* Where the sequences of a batch lie in a buffer of rows (one row per position):
 * example n holds rows off[n] .. off[n] + len[n] - 1. The sequences may be packed back to
 * back (off[n] = len[0] + ... + len[n-1]: no row is spent on padding) or padded to a
 * stride; NULL arrays mean the plain layout off[n] = n * T, len[n] = T. Rows that belong
 * to no example are neither read nor written by the kernels below. */
typedef struct fed_seqs {
    const size_t *off;  /* (N) first row of each example, or NULL: n * T */
    const int32_t *len; /* (N) rows of each example, each in [1, T], or NULL: all T */
    size_t N;           /* examples */
    size_t T;           /* the stride when off is NULL, and at least every len[n] */
} fed_seqs;

/* First row and number of rows of example n. */
static inline size_t fed_seqs_first(const fed_seqs *s, size_t n) {
    return s->off ? s->off[n] : n * s->T;
}
static inline size_t fed_seqs_len(const fed_seqs *s, size_t n) {
    return s->len ? (size_t)s->len[n] : s->T;
}

/* Scaled dot-product attention over H heads on packed projections: qkv holds, per
 * position, q | k | v (each D wide, head h in columns h*D/H ..). Each example attends
 * within its own rows only: position i to positions j < len[n], and j <= i when causal.
 * att is the heads' outputs side by side; prob the softmax weights, example after
 * example and head after head a (len[n], len[n]) block (zero where causally masked):
 * fed_sdpa_prob_size floats. Scores are q.k / sqrt(D/H), softmax row by row in one
 * fused, max-subtracted pass. */
void fed_sdpa_forward(float *att,          /* (rows, D) */
                      float *prob,         /* (fed_sdpa_prob_size) saved */
                      const float *qkv,    /* (rows, 3D) */
                      const fed_seqs *seq, /* where the examples lie */
                      size_t D, size_t H, int causal);
void fed_sdpa_backward(float *dqkv,       /* (rows, 3D): the examples' rows overwritten */
                       float *dprob,      /* scratch (T, T) */
                       const float *datt, /* (rows, D) */
                       const float *qkv,  /* (rows, 3D) */
                       const float *prob, /* (fed_sdpa_prob_size) */
                       const fed_seqs *seq, size_t D, size_t H);
/* Floats of prob: H * sum of len[n]^2. */
size_t fed_sdpa_prob_size(const fed_seqs *seq, size_t H);
/* The forward with textbook loops in double, for the tests. */
void fed_sdpa_forward_ref(float *att, float *prob, const float *qkv, const fed_seqs *seq, size_t D,
                          size_t H, int causal);

/* Mean over each example's rows: (rows, D) -> (N, D). */
void fed_meanpool_forward(float *out, const float *inp, const fed_seqs *seq, size_t D);
/* dinp (rows, D): dout / len[n] on every row of example n. */
void fed_meanpool_backward(float *dinp, const float *dout, const fed_seqs *seq, size_t D);

/* out = x / sqrt(max(sum x^2, eps)) per row of D. */
void fed_l2norm_forward(float *out, const float *inp, size_t N, size_t D, float eps);
void fed_l2norm_backward(float *dinp, const float *dout, const float *inp, const float *out,
                         size_t N, size_t D, float eps);

/* tensor2tensor's timing signal (min timescale 1, max 1e4) as TF computes it in float32:
 * row t is sin(t * inv_i) for i < D/2, then cos(t * inv_i), inv_i = exp(-i * ln(1e4) /
 * (D/2 - 1)). D is even and >= 4. */
void fed_sinusoid_table(float *table /* (T, D) */, size_t T, size_t D);

#endif
