/* The sequence layers of a model: the padded embedding (token ids followed by -1),
 * positions, multi-head self-attention, residual blocks, masked mean pooling and L2
 * normalisation. A padded batch runs at the length of its longest sequence (m->Tb), so
 * a batch of short sentences costs what short sentences cost; m->len tells attention
 * and pooling where each sequence ends. Padded positions carry values, never weight:
 * no valid position attends to them and pooling skips them, so the outputs and
 * gradients of valid positions are exactly those of the unpadded sequence. */
#include "core/alloc.h"
#include "core/model_internal.h"

#include <math.h>
#include <string.h>

fed_err fed__model_seq_tables(fed_model *m) {
    size_t total = 0;
    for (size_t l = 0; l < m->nlayers; l++) {
        const layer_rt *L = &m->layers[l];
        if (L->spec.kind == FED_LAYER_POSITIONS && L->spec.pos == FED_POS_SINUSOIDAL)
            total += L->in_numel;
    }
    if (!total) return FED_OK;
    if (!(m->tables = fed_mallocarray(total, sizeof(float)))) return FED_ENOMEM;
    float *p = m->tables;
    for (size_t l = 0; l < m->nlayers; l++) {
        layer_rt *L = &m->layers[l];
        if (L->spec.kind != FED_LAYER_POSITIONS || L->spec.pos != FED_POS_SINUSOIDAL) continue;
        fed_sinusoid_table(p, L->in.d[0], L->in.d[1]);
        L->table = p;
        p += L->in_numel;
    }
    return FED_OK;
}

/* Reads padded token ids: each row of x (N, T) holds len >= 1 integer ids in [0, vocab)
 * then -1 up to T. Sets m->len, m->Tb and the layer's (N, Tb) ids (-1 where padded). */
static fed_err padded_ids(fed_model *m, layer_rt *L, size_t l, fed_arena *a, size_t N) {
    size_t T = m->T, vocab = L->spec.vocab, Tb = 1;
    const float *x = L->x;
    ALLOC_OR_FAIL(m->len, fed_arena_alloc(a, N, sizeof(int32_t)));
    for (size_t n = 0; n < N; n++) {
        size_t len = 0;
        for (size_t t = 0; t < T; t++) {
            float v = x[n * T + t];
            if (v == -1.0f) continue; /* padding */
            if (len != t)
                return fed_errorf(FED_ERANGE,
                                  "layer %zu (embedding): example %zu: token id at position %zu "
                                  "follows padding (-1 may only end a sequence)",
                                  l, n, t);
            if (!(v >= 0.0f && v < (float)vocab) || v != floorf(v))
                return fed_errorf(FED_ERANGE,
                                  "layer %zu (embedding): example %zu position %zu: token id %g is "
                                  "not an integer in [0, %zu) nor the padding -1",
                                  l, n, t, (double)v, vocab);
            len++;
        }
        if (len == 0)
            return fed_errorf(FED_ERANGE,
                              "layer %zu (embedding): example %zu is empty (padding only)", l, n);
        m->len[n] = (int32_t)len;
        if (len > Tb) Tb = len;
    }
    m->Tb = Tb;
    ALLOC_OR_FAIL(L->idx, fed_arena_alloc(a, N * Tb, sizeof(int32_t)));
    for (size_t n = 0; n < N; n++)
        for (size_t t = 0; t < Tb; t++)
            L->idx[n * Tb + t] = t < (size_t)m->len[n] ? (int32_t)x[n * T + t] : -1;
    return FED_OK;
}

static fed_err embedding_forward(fed_model *m, layer_rt *L, size_t l, fed_arena *a, size_t N) {
    fed_err err = padded_ids(m, L, l, a, N);
    if (err) return err;
    size_t D = L->spec.dim, rows = N * m->Tb;
    L->out_eff = m->Tb * D;
    ALLOC_OR_FAIL(L->y, fed_arena_floats(a, rows * D));
    const float *table = fed__model_tensor(m, L->w);
    for (size_t r = 0; r < rows; r++) {
        if (L->idx[r] < 0)
            memset(L->y + r * D, 0, D * sizeof(float));
        else
            memcpy(L->y + r * D, table + (size_t)L->idx[r] * D, D * sizeof(float));
    }
    return FED_OK;
}

/* Positions of the layer's input sequences and their lengths (NULL: all valid). */
static size_t seq_len(const fed_model *m, const layer_rt *L) {
    return L->seq_in ? m->Tb : L->in.d[0];
}

static const int32_t *seq_lens(const fed_model *m, const layer_rt *L) {
    return L->seq_in ? m->len : NULL;
}

static fed_err attention_forward(fed_model *m, layer_rt *L, fed_arena *a, size_t N) {
    size_t T = seq_len(m, L), D = L->in.d[1], H = L->spec.heads, O = L->spec.out, rows = N * T;
    ALLOC_OR_FAIL(L->qkv, fed_arena_floats(a, rows * 3 * D));
    ALLOC_OR_FAIL(L->att, fed_arena_floats(a, rows * D));
    ALLOC_OR_FAIL(L->prob, fed_arena_floats(a, N * H * T * T));
    ALLOC_OR_FAIL(L->y, fed_arena_floats(a, rows * O));
    fed_err err = fed__model_lin_forward(m, L, 0, a, L->qkv, L->x, rows, D, 3 * D);
    if (err) return err;
    fed_sdpa_forward(L->att, L->prob, L->qkv, seq_lens(m, L), N, T, D, H, L->spec.causal);
    return fed__model_lin_forward(m, L, 1, a, L->y, L->att, rows, D, O);
}

static fed_err attention_backward(fed_model *m, layer_rt *L, fed_arena *a, size_t N,
                                  const float *dy, float *dx) {
    size_t T = seq_len(m, L), D = L->in.d[1], H = L->spec.heads, O = L->spec.out, rows = N * T;
    float *datt, *dqkv, *dprob;
    ALLOC_OR_FAIL(datt, fed_arena_floats(a, rows * D));
    ALLOC_OR_FAIL(dqkv, fed_arena_floats(a, rows * 3 * D));
    ALLOC_OR_FAIL(dprob, fed_arena_floats(a, T * T));
    fed_err err = fed__model_lin_backward(m, L, 1, a, datt, dy, L->att, rows, D, O);
    if (err) return err;
    fed_sdpa_backward(dqkv, dprob, datt, L->qkv, L->prob, N, T, D, H);
    return fed__model_lin_backward(m, L, 0, a, dx, dqkv, L->x, rows, D, 3 * D);
}

/* y = branch + skip, or branch + proj(skip). */
static fed_err residual_end_forward(fed_model *m, layer_rt *L, fed_arena *a, size_t N) {
    const layer_rt *open = &m->layers[L->spec.pair];
    size_t n = N * L->out_eff;
    ALLOC_OR_FAIL(L->y, fed_arena_floats(a, n));
    if (L->spec.proj) {
        size_t Ds = open->in.d[open->in.ndim - 1], O = L->out.d[L->out.ndim - 1];
        fed_err err = fed__model_lin_forward(m, L, 1, a, L->y, open->x, n / O, Ds, O);
        if (err) return err;
        for (size_t i = 0; i < n; i++) L->y[i] += L->x[i];
    } else {
        for (size_t i = 0; i < n; i++) L->y[i] = L->x[i] + open->x[i];
    }
    return FED_OK;
}

/* The branch gets dy as it is; the skip path's gradient waits in the block's opening
 * layer, which adds it to what comes down the branch. */
static fed_err residual_end_backward(fed_model *m, layer_rt *L, fed_arena *a, size_t N,
                                     const float *dy, bool need_dx) {
    layer_rt *open = &m->layers[L->spec.pair];
    open->dskip = NULL;
    if (!L->spec.proj) {
        open->dskip = (float *)dy;
        return FED_OK;
    }
    size_t Ds = open->in.d[open->in.ndim - 1], O = L->out.d[L->out.ndim - 1];
    size_t rows = N * L->out_eff / O;
    if (need_dx) ALLOC_OR_FAIL(open->dskip, fed_arena_floats(a, rows * Ds));
    return fed__model_lin_backward(m, L, 1, a, open->dskip, dy, open->x, rows, Ds, O);
}

fed_err fed__model_seq_forward(fed_model *m, layer_rt *L, size_t l, fed_arena *a, size_t N) {
    const fed_layer_spec *s = &L->spec;
    size_t nin = N * L->in_eff;
    switch (s->kind) {
    case FED_LAYER_EMBEDDING:
        return embedding_forward(m, L, l, a, N);
    case FED_LAYER_POSITIONS: {
        size_t T = seq_len(m, L), D = L->in.d[1];
        const float *p = s->pos == FED_POS_LEARNED ? fed__model_tensor(m, L->w) : L->table;
        ALLOC_OR_FAIL(L->y, fed_arena_floats(a, nin));
        for (size_t n = 0; n < N; n++)
            for (size_t i = 0; i < T * D; i++) L->y[n * T * D + i] = L->x[n * T * D + i] + p[i];
        return FED_OK;
    }
    case FED_LAYER_ATTENTION:
        return attention_forward(m, L, a, N);
    case FED_LAYER_RESIDUAL:
        L->y = (float *)L->x;
        return FED_OK;
    case FED_LAYER_RESIDUAL_END:
        return residual_end_forward(m, L, a, N);
    case FED_LAYER_MEANPOOL:
        ALLOC_OR_FAIL(L->y, fed_arena_floats(a, N * L->out_eff));
        fed_meanpool_forward(L->y, L->x, seq_lens(m, L), N, seq_len(m, L), L->in.d[1]);
        return FED_OK;
    case FED_LAYER_L2NORM: {
        size_t D = L->in.d[L->in.ndim - 1];
        ALLOC_OR_FAIL(L->y, fed_arena_floats(a, nin));
        fed_l2norm_forward(L->y, L->x, nin / D, D, s->eps);
        return FED_OK;
    }
    default:
        return fed_errorf(FED_EINVAL, "layer %zu (%s) is not a sequence layer", l,
                          fed_layer_kind_name(s->kind));
    }
}

fed_err fed__model_seq_backward(fed_model *m, layer_rt *L, fed_arena *a, size_t N, const float *dy,
                                bool need_dx, float **dx_out) {
    const fed_layer_spec *s = &L->spec;
    size_t nin = N * L->in_eff;
    float *dx = NULL;
    *dx_out = NULL;
    switch (s->kind) {
    case FED_LAYER_EMBEDDING: {
        float *dw = fed__model_grad(m, L->w);
        size_t D = s->dim, rows = N * m->Tb;
        if (dw)
            for (size_t r = 0; r < rows; r++)
                if (L->idx[r] >= 0) {
                    float *g = dw + (size_t)L->idx[r] * D;
                    for (size_t c = 0; c < D; c++) g[c] += dy[r * D + c];
                }
        return FED_OK; /* token ids have no gradient */
    }
    case FED_LAYER_POSITIONS: {
        float *dw = s->pos == FED_POS_LEARNED ? fed__model_grad(m, L->w) : NULL;
        size_t TD = seq_len(m, L) * L->in.d[1];
        if (dw)
            for (size_t n = 0; n < N; n++)
                for (size_t i = 0; i < TD; i++) dw[i] += dy[n * TD + i];
        *dx_out = need_dx ? (float *)dy : NULL;
        return FED_OK;
    }
    case FED_LAYER_ATTENTION:
        if (need_dx) ALLOC_OR_FAIL(dx, fed_arena_floats(a, nin));
        *dx_out = dx;
        return attention_backward(m, L, a, N, dy, dx);
    case FED_LAYER_RESIDUAL:
        if (!need_dx) return FED_OK;
        ALLOC_OR_FAIL(dx, fed_arena_floats(a, nin));
        for (size_t i = 0; i < nin; i++) dx[i] = dy[i] + (L->dskip ? L->dskip[i] : 0.0f);
        *dx_out = dx;
        return FED_OK;
    case FED_LAYER_RESIDUAL_END:
        *dx_out = need_dx ? (float *)dy : NULL;
        return residual_end_backward(m, L, a, N, dy, need_dx);
    case FED_LAYER_MEANPOOL:
        if (!need_dx) return FED_OK;
        ALLOC_OR_FAIL(dx, fed_arena_floats(a, nin));
        fed_meanpool_backward(dx, dy, seq_lens(m, L), N, seq_len(m, L), L->in.d[1]);
        *dx_out = dx;
        return FED_OK;
    case FED_LAYER_L2NORM: {
        if (!need_dx) return FED_OK;
        size_t D = L->in.d[L->in.ndim - 1];
        ALLOC_OR_FAIL(dx, fed_arena_floats(a, nin));
        fed_l2norm_backward(dx, dy, L->x, L->y, nin / D, D, s->eps);
        *dx_out = dx;
        return FED_OK;
    }
    default:
        return fed_errorf(FED_EINVAL, "%s is not a sequence layer", fed_layer_kind_name(s->kind));
    }
}
