/* Sequence kernels: scaled dot-product attention (batched gemm per example and head,
 * one fused softmax pass per row), masked mean pooling, L2 normalisation and the
 * sinusoidal timing signal. Same conventions as the other kernels (kernels.h). */
#include "core/blas.h"
#include "core/kernels.h"

#include <assert.h>
#include <math.h>
#include <string.h>

/* Softmax of row s[0..n) in place over the first `valid` entries; the rest become 0. */
static void softmax_row(float *s, size_t valid, size_t n) {
    float mx = s[0];
    for (size_t j = 1; j < valid; j++) mx = s[j] > mx ? s[j] : mx;
    float sum = 0.0f;
    for (size_t j = 0; j < valid; j++) {
        s[j] = expf(s[j] - mx);
        sum += s[j];
    }
    float inv = 1.0f / sum;
    for (size_t j = 0; j < valid; j++) s[j] *= inv;
    for (size_t j = valid; j < n; j++) s[j] = 0.0f;
}

/* Keys row i may see. */
static size_t row_valid(const int32_t *len, size_t n, size_t T, size_t i, int causal) {
    size_t v = len ? (size_t)len[n] : T;
    if (causal && i + 1 < v) v = i + 1;
    return v ? v : 1;
}

void fed_sdpa_forward(float *att, float *prob, const float *qkv, const int32_t *len, size_t N,
                      size_t T, size_t D, size_t H, int causal) {
    assert(H > 0 && D % H == 0);
    size_t hd = D / H, ld = 3 * D;
    float scale = 1.0f / sqrtf((float)hd);
    for (size_t n = 0; n < N; n++) {
        const float *x = qkv + n * T * ld;
        for (size_t h = 0; h < H; h++) {
            float *P = prob + (n * H + h) * T * T;
            const float *q = x + h * hd, *k = x + D + h * hd, *v = x + 2 * D + h * hd;
            /* P = scale * q k^T, then the masked softmax of each row */
            fed_gemm(false, true, T, T, hd, scale, q, ld, k, ld, 0.0f, P, T);
            for (size_t i = 0; i < T; i++)
                softmax_row(P + i * T, row_valid(len, n, T, i, causal), T);
            /* att_h = P v */
            fed_gemm(false, false, T, hd, T, 1.0f, P, T, v, ld, 0.0f, att + n * T * D + h * hd, D);
        }
    }
}

void fed_sdpa_forward_ref(float *att, float *prob, const float *qkv, const int32_t *len, size_t N,
                          size_t T, size_t D, size_t H, int causal) {
    size_t hd = D / H, ld = 3 * D;
    double scale = 1.0 / sqrt((double)hd);
    for (size_t n = 0; n < N; n++) {
        for (size_t h = 0; h < H; h++) {
            float *P = prob + (n * H + h) * T * T;
            for (size_t i = 0; i < T; i++) {
                size_t valid = row_valid(len, n, T, i, causal);
                float *s = P + i * T;
                double mx = -(double)INFINITY, sum = 0.0;
                for (size_t j = 0; j < valid; j++) {
                    double d = 0.0;
                    for (size_t c = 0; c < hd; c++)
                        d += (double)qkv[(n * T + i) * ld + h * hd + c] *
                             (double)qkv[(n * T + j) * ld + D + h * hd + c];
                    s[j] = (float)(d * scale);
                    mx = (double)s[j] > mx ? (double)s[j] : mx;
                }
                for (size_t j = 0; j < valid; j++) sum += exp((double)s[j] - mx);
                for (size_t j = 0; j < T; j++)
                    s[j] = j < valid ? (float)(exp((double)s[j] - mx) / sum) : 0.0f;
                for (size_t c = 0; c < hd; c++) {
                    double o = 0.0;
                    for (size_t j = 0; j < valid; j++)
                        o += (double)P[i * T + j] *
                             (double)qkv[(n * T + j) * ld + 2 * D + h * hd + c];
                    att[(n * T + i) * D + h * hd + c] = (float)o;
                }
            }
        }
    }
}

void fed_sdpa_backward(float *dqkv, float *dprob, const float *datt, const float *qkv,
                       const float *prob, size_t N, size_t T, size_t D, size_t H) {
    size_t hd = D / H, ld = 3 * D;
    float scale = 1.0f / sqrtf((float)hd);
    for (size_t n = 0; n < N; n++) {
        const float *x = qkv + n * T * ld;
        float *dx = dqkv + n * T * ld;
        const float *dA = datt + n * T * D;
        for (size_t h = 0; h < H; h++) {
            const float *P = prob + (n * H + h) * T * T;
            const float *q = x + h * hd, *k = x + D + h * hd, *v = x + 2 * D + h * hd;
            float *dq = dx + h * hd, *dk = dx + D + h * hd, *dv = dx + 2 * D + h * hd;
            /* dv = P^T datt_h; dP = datt_h v^T */
            fed_gemm(true, false, T, hd, T, 1.0f, P, T, dA + h * hd, D, 0.0f, dv, ld);
            fed_gemm(false, true, T, T, hd, 1.0f, dA + h * hd, D, v, ld, 0.0f, dprob, T);
            /* dS = P * (dP - rowsum(dP * P)) * scale; masked entries have P = 0 */
            for (size_t i = 0; i < T; i++) {
                const float *p = P + i * T;
                float *d = dprob + i * T, dot = 0.0f;
                for (size_t j = 0; j < T; j++) dot += d[j] * p[j];
                for (size_t j = 0; j < T; j++) d[j] = p[j] * (d[j] - dot) * scale;
            }
            /* dq = dS k; dk = dS^T q */
            fed_gemm(false, false, T, hd, T, 1.0f, dprob, T, k, ld, 0.0f, dq, ld);
            fed_gemm(true, false, T, hd, T, 1.0f, dprob, T, q, ld, 0.0f, dk, ld);
        }
    }
}

void fed_meanpool_forward(float *out, const float *inp, const int32_t *len, size_t N, size_t T,
                          size_t D) {
    for (size_t n = 0; n < N; n++) {
        size_t L = len ? (size_t)len[n] : T;
        float *y = out + n * D;
        memset(y, 0, D * sizeof(float));
        for (size_t t = 0; t < L; t++) {
            const float *x = inp + (n * T + t) * D;
            for (size_t c = 0; c < D; c++) y[c] += x[c];
        }
        float inv = 1.0f / (float)(L ? L : 1);
        for (size_t c = 0; c < D; c++) y[c] *= inv;
    }
}

void fed_meanpool_backward(float *dinp, const float *dout, const int32_t *len, size_t N, size_t T,
                           size_t D) {
    for (size_t n = 0; n < N; n++) {
        size_t L = len ? (size_t)len[n] : T;
        float inv = 1.0f / (float)(L ? L : 1);
        for (size_t t = 0; t < T; t++) {
            float *dx = dinp + (n * T + t) * D;
            const float *dy = dout + n * D;
            for (size_t c = 0; c < D; c++) dx[c] = t < L ? dy[c] * inv : 0.0f;
        }
    }
}

void fed_l2norm_forward(float *out, const float *inp, size_t N, size_t D, float eps) {
    for (size_t n = 0; n < N; n++) {
        const float *x = inp + n * D;
        float ss = 0.0f;
        for (size_t c = 0; c < D; c++) ss += x[c] * x[c];
        float r = 1.0f / sqrtf(ss > eps ? ss : eps);
        for (size_t c = 0; c < D; c++) out[n * D + c] = x[c] * r;
    }
}

void fed_l2norm_backward(float *dinp, const float *dout, const float *inp, const float *out,
                         size_t N, size_t D, float eps) {
    for (size_t n = 0; n < N; n++) {
        const float *x = inp + n * D, *y = out + n * D, *dy = dout + n * D;
        float ss = 0.0f, dot = 0.0f;
        for (size_t c = 0; c < D; c++) {
            ss += x[c] * x[c];
            dot += y[c] * dy[c];
        }
        float r = 1.0f / sqrtf(ss > eps ? ss : eps);
        /* below eps the norm is a constant: dx = dy * r */
        if (!(ss > eps)) dot = 0.0f;
        for (size_t c = 0; c < D; c++) dinp[n * D + c] = (dy[c] - y[c] * dot) * r;
    }
}

void fed_sinusoid_table(float *table, size_t T, size_t D) {
    assert(D % 2 == 0 && D >= 4);
    size_t half = D / 2;
    double inc = log(1.0e4) / (double)(half - 1);
    for (size_t i = 0; i < half; i++) {
        float inv = (float)exp(-(double)i * inc);
        for (size_t t = 0; t < T; t++) {
            float a = (float)((double)(float)t * (double)inv);
            table[t * D + i] = (float)sin((double)a);
            table[t * D + half + i] = (float)cos((double)a);
        }
    }
}
