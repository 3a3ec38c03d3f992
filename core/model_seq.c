/* The sequence layers of a model: the padded embedding (token ids followed by -1),
 * positions, multi-head self-attention, residual blocks, masked mean pooling and L2
 * normalisation. Padding costs nothing: when a meanpool closes the sequence (only pooled
 * vectors leave the network) the sentences of a batch are packed back to back, sentence
 * n at rows m->off[n] .. m->off[n] + m->len[n] - 1, so the position-wise layers (linear,
 * layer norm, activations, residual sums) run on the batch's real tokens alone; for them
 * a batch is N examples of m->Tb = ceil(tokens / N) rows, and the last few rows belong to
 * no sentence. Attention and pooling visit each sentence's own rows (fed_seqs). A network
 * whose output is the sequence itself keeps every example at rows n*T .. n*T + T - 1, so
 * its output has the (N, T, ...) shape callers expect. Rows of no sentence carry zeros or
 * values, never weight: the outputs and gradients of every sentence are exactly those of
 * the sentence alone. */
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

/* Does a meanpool close the sequence that layer l opens? */
static bool pooled_after(const fed_model *m, size_t l) {
    for (size_t i = l + 1; i < m->nlayers; i++)
        if (m->layers[i].spec.kind == FED_LAYER_MEANPOOL) return true;
    return false;
}

/* Reads padded token ids: each row of x (N, T) holds len >= 1 integer ids in [0, vocab)
 * then -1 up to T. Sets m->len, m->off, m->Tmax and m->Tb (the layout above) and the
 * layer's ids per row (-1 for rows of no sentence). */
static fed_err padded_ids(fed_model *m, layer_rt *L, size_t l, fed_arena *a, size_t N) {
    size_t T = m->T, vocab = L->spec.vocab, Tmax = 1, tokens = 0;
    const float *x = L->x;
    ALLOC_OR_FAIL(m->len, fed_arena_alloc(a, N, sizeof(int32_t)));
    ALLOC_OR_FAIL(m->off, fed_arena_alloc(a, N, sizeof(size_t)));
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
        if (len > Tmax) Tmax = len;
    }
    bool packed = pooled_after(m, l);
    for (size_t n = 0; n < N; n++) {
        m->off[n] = packed ? tokens : n * T;
        tokens += (size_t)m->len[n];
    }
    m->Tmax = Tmax;
    m->Tb = packed ? (tokens + N - 1) / N : T;
    size_t rows = N * m->Tb;
    ALLOC_OR_FAIL(L->idx, fed_arena_alloc(a, rows, sizeof(int32_t)));
    for (size_t r = 0; r < rows; r++) L->idx[r] = -1;
    for (size_t n = 0; n < N; n++)
        for (size_t t = 0; t < (size_t)m->len[n]; t++)
            L->idx[m->off[n] + t] = (int32_t)x[n * T + t];
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

/* Rows per example of the layer's sequence buffers. */
static size_t seq_rows(const fed_model *m, const layer_rt *L) {
    return L->seq_in ? m->Tb : L->in.d[0];
}

/* Where the examples of the layer's input lie: as padded_ids laid them out after a padded
 * embedding, otherwise the plain (N, T) layout. */
static fed_seqs seqs_of(const fed_model *m, const layer_rt *L, size_t N) {
    if (L->seq_in) return (fed_seqs){m->off, m->len, N, m->Tmax};
    return (fed_seqs){NULL, NULL, N, L->in.d[0]};
}

static fed_err attention_forward(fed_model *m, layer_rt *L, fed_arena *a, size_t N) {
    size_t D = L->in.d[1], H = L->spec.heads, O = L->spec.out, rows = N * seq_rows(m, L);
    fed_seqs sq = seqs_of(m, L, N);
    ALLOC_OR_FAIL(L->qkv, fed_arena_floats(a, rows * 3 * D));
    ALLOC_OR_FAIL(L->att, fed_arena_floats(a, rows * D));
    ALLOC_OR_FAIL(L->prob, fed_arena_floats(a, fed_sdpa_prob_size(&sq, H)));
    ALLOC_OR_FAIL(L->y, fed_arena_floats(a, rows * O));
    fed_err err = fed__model_lin_forward(m, L, 0, a, L->qkv, L->x, rows, D, 3 * D);
    if (err) return err;
    if (L->seq_in) memset(L->att, 0, rows * D * sizeof(float)); /* rows of no sentence */
    fed_sdpa_forward(L->att, L->prob, L->qkv, &sq, D, H, L->spec.causal);
    return fed__model_lin_forward(m, L, 1, a, L->y, L->att, rows, D, O);
}

static fed_err attention_backward(fed_model *m, layer_rt *L, fed_arena *a, size_t N,
                                  const float *dy, float *dx) {
    size_t D = L->in.d[1], H = L->spec.heads, O = L->spec.out, rows = N * seq_rows(m, L);
    fed_seqs sq = seqs_of(m, L, N);
    float *datt, *dqkv, *dprob;
    ALLOC_OR_FAIL(datt, fed_arena_floats(a, rows * D));
    ALLOC_OR_FAIL(dqkv, fed_arena_floats(a, rows * 3 * D));
    ALLOC_OR_FAIL(dprob, fed_arena_floats(a, sq.T * sq.T));
    fed_err err = fed__model_lin_backward(m, L, 1, a, datt, dy, L->att, rows, D, O);
    if (err) return err;
    if (L->seq_in) memset(dqkv, 0, rows * 3 * D * sizeof(float));
    fed_sdpa_backward(dqkv, dprob, datt, L->qkv, L->prob, &sq, D, H);
    return fed__model_lin_backward(m, L, 0, a, dx, dqkv, L->x, rows, D, 3 * D);
}

/* y = x + the position signal p (T, D), each example's row t getting p's row t. */
static void add_positions(float *y, const float *x, const float *p, const fed_seqs *sq, size_t D,
                          size_t nin) {
    memcpy(y, x, nin * sizeof(float));
    for (size_t n = 0; n < sq->N; n++) {
        float *row = y + fed_seqs_first(sq, n) * D;
        for (size_t i = 0; i < fed_seqs_len(sq, n) * D; i++) row[i] += p[i];
    }
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
        const float *p = s->pos == FED_POS_LEARNED ? fed__model_tensor(m, L->w) : L->table;
        fed_seqs sq = seqs_of(m, L, N);
        ALLOC_OR_FAIL(L->y, fed_arena_floats(a, nin));
        add_positions(L->y, L->x, p, &sq, L->in.d[1], nin);
        return FED_OK;
    }
    case FED_LAYER_ATTENTION:
        return attention_forward(m, L, a, N);
    case FED_LAYER_RESIDUAL:
        L->y = (float *)L->x;
        return FED_OK;
    case FED_LAYER_RESIDUAL_END:
        return residual_end_forward(m, L, a, N);
    case FED_LAYER_MEANPOOL: {
        fed_seqs sq = seqs_of(m, L, N);
        ALLOC_OR_FAIL(L->y, fed_arena_floats(a, N * L->out_eff));
        fed_meanpool_forward(L->y, L->x, &sq, L->in.d[1]);
        return FED_OK;
    }
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
        fed_seqs sq = seqs_of(m, L, N);
        size_t D = L->in.d[1];
        for (size_t n = 0; dw && n < N; n++) {
            const float *row = dy + fed_seqs_first(&sq, n) * D;
            for (size_t i = 0; i < fed_seqs_len(&sq, n) * D; i++) dw[i] += row[i];
        }
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
    case FED_LAYER_MEANPOOL: {
        if (!need_dx) return FED_OK;
        fed_seqs sq = seqs_of(m, L, N);
        ALLOC_OR_FAIL(dx, fed_arena_floats(a, nin));
        if (L->seq_in) memset(dx, 0, nin * sizeof(float)); /* rows of no sentence */
        fed_meanpool_backward(dx, dy, &sq, L->in.d[1]);
        *dx_out = dx;
        return FED_OK;
    }
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
