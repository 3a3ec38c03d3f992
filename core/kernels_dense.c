/* Dense kernels: linear, elementwise activations, dropout, layer norm, embedding.
 * Convolution and pooling live in kernels_conv.c. */
#include "core/blas.h"
#include "core/kernels.h"

#include <assert.h>
#include <math.h>
#include <string.h>

/* ---- linear ---------------------------------------------------------------------- */

void fed_linear_forward(float *out, const float *inp, const float *w, const float *b, size_t N,
                        size_t C, size_t OC) {
    float beta = 0.0f;
    if (b) {
        for (size_t n = 0; n < N; n++) memcpy(out + n * OC, b, OC * sizeof(float));
        beta = 1.0f;
    }
    fed_gemm(false, true, N, OC, C, 1.0f, inp, C, w, C, beta, out, OC);
}

void fed_linear_forward_ref(float *out, const float *inp, const float *w, const float *b, size_t N,
                            size_t C, size_t OC) {
    for (size_t n = 0; n < N; n++) {
        for (size_t o = 0; o < OC; o++) {
            double acc = b ? (double)b[o] : 0.0;
            for (size_t c = 0; c < C; c++) acc += (double)inp[n * C + c] * (double)w[o * C + c];
            out[n * OC + o] = (float)acc;
        }
    }
}

void fed_linear_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                         const float *w, size_t N, size_t C, size_t OC) {
    if (dinp) fed_gemm(false, false, N, C, OC, 1.0f, dout, OC, w, C, 0.0f, dinp, C);
    if (dw) fed_gemm(true, false, OC, C, N, 1.0f, dout, OC, inp, C, 1.0f, dw, C);
    if (db) {
        for (size_t n = 0; n < N; n++) {
            const float *row = dout + n * OC;
            for (size_t o = 0; o < OC; o++) db[o] += row[o];
        }
    }
}

void fed_linear_backward_ref(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                             const float *w, size_t N, size_t C, size_t OC) {
    if (dinp) {
        for (size_t n = 0; n < N; n++) {
            for (size_t c = 0; c < C; c++) {
                double acc = 0.0;
                for (size_t o = 0; o < OC; o++)
                    acc += (double)dout[n * OC + o] * (double)w[o * C + c];
                dinp[n * C + c] = (float)acc;
            }
        }
    }
    if (dw) {
        for (size_t o = 0; o < OC; o++) {
            for (size_t c = 0; c < C; c++) {
                double acc = 0.0;
                for (size_t n = 0; n < N; n++)
                    acc += (double)dout[n * OC + o] * (double)inp[n * C + c];
                dw[o * C + c] += (float)acc;
            }
        }
    }
    if (db) {
        for (size_t o = 0; o < OC; o++) {
            double acc = 0.0;
            for (size_t n = 0; n < N; n++) acc += (double)dout[n * OC + o];
            db[o] += (float)acc;
        }
    }
}

/* ---- activations ------------------------------------------------------------------ */

void fed_relu_forward(float *out, const float *inp, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
}

void fed_relu_backward(float *dinp, const float *dout, const float *inp, size_t n) {
    /* Both loads unconditional, so the compiler turns the select into vector blends. */
    for (size_t i = 0; i < n; i++) {
        float g = dout[i];
        dinp[i] = inp[i] > 0.0f ? g : 0.0f;
    }
}

#define INV_SQRT2    0.70710678118654752440f
#define INV_SQRT_2PI 0.39894228040143267794f

void fed_gelu_forward(float *out, const float *inp, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        out[i] = 0.5f * x * (1.0f + erff(x * INV_SQRT2));
    }
}

void fed_gelu_backward(float *dinp, const float *dout, const float *inp, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        float cdf = 0.5f * (1.0f + erff(x * INV_SQRT2));
        float pdf = INV_SQRT_2PI * expf(-0.5f * x * x);
        dinp[i] = dout[i] * (cdf + x * pdf);
    }
}

void fed_tanh_forward(float *out, const float *inp, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = tanhf(inp[i]);
}

void fed_tanh_backward(float *dinp, const float *dout, const float *out, size_t n) {
    for (size_t i = 0; i < n; i++) dinp[i] = dout[i] * (1.0f - out[i] * out[i]);
}

void fed_sigmoid_forward(float *out, const float *inp, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        /* Never exponentiate a large positive number. */
        if (x >= 0.0f) {
            out[i] = 1.0f / (1.0f + expf(-x));
        } else {
            float e = expf(x);
            out[i] = e / (1.0f + e);
        }
    }
}

void fed_sigmoid_backward(float *dinp, const float *dout, const float *out, size_t n) {
    for (size_t i = 0; i < n; i++) dinp[i] = dout[i] * out[i] * (1.0f - out[i]);
}

/* ---- dropout ---------------------------------------------------------------------- */

void fed_dropout_forward(float *out, float *mask, const float *inp, size_t n, float p,
                         fed_rng *rng) {
    assert(p >= 0.0f && p < 1.0f);
    float scale = 1.0f / (1.0f - p);
    for (size_t i = 0; i < n; i++) {
        mask[i] = fed_rng_uniform(rng) >= p ? scale : 0.0f;
        out[i] = inp[i] * mask[i];
    }
}

void fed_dropout_backward(float *dinp, const float *dout, const float *mask, size_t n) {
    for (size_t i = 0; i < n; i++) dinp[i] = dout[i] * mask[i];
}

/* ---- layer norm ------------------------------------------------------------------- */

void fed_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w,
                           const float *b, size_t N, size_t C, float eps) {
    for (size_t n = 0; n < N; n++) {
        const float *x = inp + n * C;
        double m = 0.0;
        for (size_t c = 0; c < C; c++) m += (double)x[c];
        m /= (double)C;
        double v = 0.0;
        for (size_t c = 0; c < C; c++) {
            double d = (double)x[c] - m;
            v += d * d;
        }
        v /= (double)C;
        float s = (float)(1.0 / sqrt(v + (double)eps));
        float *y = out + n * C;
        for (size_t c = 0; c < C; c++) y[c] = ((x[c] - (float)m) * s) * w[c] + b[c];
        mean[n] = (float)m;
        rstd[n] = s;
    }
}

void fed_layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                            const float *mean, const float *rstd, const float *w, size_t N,
                            size_t C) {
    for (size_t n = 0; n < N; n++) {
        const float *x = inp + n * C;
        const float *dy = dout + n * C;
        float m = mean[n], s = rstd[n];
        /* dx = s * (dnorm - mean(dnorm) - norm * mean(dnorm * norm)), dnorm = dy * w */
        double dnorm_mean = 0.0, dnorm_norm_mean = 0.0;
        for (size_t c = 0; c < C; c++) {
            float norm = (x[c] - m) * s;
            float dnorm = dy[c] * w[c];
            dnorm_mean += (double)dnorm;
            dnorm_norm_mean += (double)dnorm * (double)norm;
        }
        dnorm_mean /= (double)C;
        dnorm_norm_mean /= (double)C;
        float *dx = dinp + n * C;
        for (size_t c = 0; c < C; c++) {
            float norm = (x[c] - m) * s;
            float dnorm = dy[c] * w[c];
            if (dw) dw[c] += dy[c] * norm;
            if (db) db[c] += dy[c];
            dx[c] = (dnorm - (float)dnorm_mean - norm * (float)dnorm_norm_mean) * s;
        }
    }
}

/* ---- embedding -------------------------------------------------------------------- */

void fed_embedding_forward(float *out, const int32_t *ids, const float *table, size_t N, size_t D) {
    for (size_t n = 0; n < N; n++) {
        assert(ids[n] >= 0);
        memcpy(out + n * D, table + (size_t)ids[n] * D, D * sizeof(float));
    }
}

void fed_embedding_backward(float *dtable, const float *dout, const int32_t *ids, size_t N,
                            size_t D) {
    for (size_t n = 0; n < N; n++) {
        float *row = dtable + (size_t)ids[n] * D;
        const float *g = dout + n * D;
        for (size_t d = 0; d < D; d++) row[d] += g[d];
    }
}
