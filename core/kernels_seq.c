/* Sequence kernels: scaled dot-product attention (gemm per example and head, one fused
 * softmax pass per row), mean pooling over each example's rows, L2 normalisation and the
 * sinusoidal timing signal. Sequences may be packed back to back or padded (fed_seqs);
 * the kernels visit each example's own rows only. Same conventions as the other kernels
 * (kernels.h). */
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

static size_t first_row(const fed_seqs *seq, size_t n) {
    return fed_seqs_first(seq, n);
}

static size_t rows_of(const fed_seqs *seq, size_t n) {
    size_t L = fed_seqs_len(seq, n);
    assert(L >= 1 && L <= seq->T);
    return L;
}

size_t fed_sdpa_prob_size(const fed_seqs *seq, size_t H) {
    size_t total = 0;
    for (size_t n = 0; n < seq->N; n++) total += rows_of(seq, n) * rows_of(seq, n);
    return total * H;
}

void fed_sdpa_forward(float *att, float *prob, const float *qkv, const fed_seqs *seq, size_t D,
                      size_t H, int causal) {
    assert(H > 0 && D % H == 0);
    size_t hd = D / H, ld = 3 * D;
    float scale = 1.0f / sqrtf((float)hd);
    float *P = prob;
    for (size_t n = 0; n < seq->N; n++) {
        size_t L = rows_of(seq, n), r0 = first_row(seq, n);
        const float *x = qkv + r0 * ld;
        for (size_t h = 0; h < H; h++, P += L * L) {
            const float *q = x + h * hd, *k = x + D + h * hd, *v = x + 2 * D + h * hd;
            /* P = scale * q k^T, then the softmax of each row over the keys it sees */
            fed_gemm(false, true, L, L, hd, scale, q, ld, k, ld, 0.0f, P, L);
            for (size_t i = 0; i < L; i++) softmax_row(P + i * L, causal ? i + 1 : L, L);
            /* att_h = P v */
            fed_gemm(false, false, L, hd, L, 1.0f, P, L, v, ld, 0.0f, att + r0 * D + h * hd, D);
        }
    }
}

void fed_sdpa_forward_ref(float *att, float *prob, const float *qkv, const fed_seqs *seq, size_t D,
                          size_t H, int causal) {
    size_t hd = D / H, ld = 3 * D;
    double scale = 1.0 / sqrt((double)hd);
    float *P = prob;
    for (size_t n = 0; n < seq->N; n++) {
        size_t L = rows_of(seq, n);
        const float *x = qkv + first_row(seq, n) * ld;
        float *o = att + first_row(seq, n) * D;
        for (size_t h = 0; h < H; h++, P += L * L) {
            for (size_t i = 0; i < L; i++) {
                size_t valid = causal ? i + 1 : L;
                float *s = P + i * L;
                double mx = -(double)INFINITY, sum = 0.0;
                for (size_t j = 0; j < valid; j++) {
                    double d = 0.0;
                    for (size_t c = 0; c < hd; c++)
                        d += (double)x[i * ld + h * hd + c] * (double)x[j * ld + D + h * hd + c];
                    s[j] = (float)(d * scale);
                    mx = (double)s[j] > mx ? (double)s[j] : mx;
                }
                for (size_t j = 0; j < valid; j++) sum += exp((double)s[j] - mx);
                for (size_t j = 0; j < L; j++)
                    s[j] = j < valid ? (float)(exp((double)s[j] - mx) / sum) : 0.0f;
                for (size_t c = 0; c < hd; c++) {
                    double acc = 0.0;
                    for (size_t j = 0; j < valid; j++)
                        acc += (double)s[j] * (double)x[j * ld + 2 * D + h * hd + c];
                    o[i * D + h * hd + c] = (float)acc;
                }
            }
        }
    }
}

void fed_sdpa_backward(float *dqkv, float *dprob, const float *datt, const float *qkv,
                       const float *prob, const fed_seqs *seq, size_t D, size_t H) {
    size_t hd = D / H, ld = 3 * D;
    float scale = 1.0f / sqrtf((float)hd);
    const float *P = prob;
    for (size_t n = 0; n < seq->N; n++) {
        size_t L = rows_of(seq, n), r0 = first_row(seq, n);
        const float *x = qkv + r0 * ld, *dA = datt + r0 * D;
        float *dx = dqkv + r0 * ld;
        for (size_t h = 0; h < H; h++, P += L * L) {
            const float *q = x + h * hd, *k = x + D + h * hd, *v = x + 2 * D + h * hd;
            float *dq = dx + h * hd, *dk = dx + D + h * hd, *dv = dx + 2 * D + h * hd;
            /* dv = P^T datt_h; dP = datt_h v^T */
            fed_gemm(true, false, L, hd, L, 1.0f, P, L, dA + h * hd, D, 0.0f, dv, ld);
            fed_gemm(false, true, L, L, hd, 1.0f, dA + h * hd, D, v, ld, 0.0f, dprob, L);
            /* dS = P * (dP - rowsum(dP * P)) * scale; masked entries have P = 0 */
            for (size_t i = 0; i < L; i++) {
                const float *p = P + i * L;
                float *d = dprob + i * L, dot = 0.0f;
                for (size_t j = 0; j < L; j++) dot += d[j] * p[j];
                for (size_t j = 0; j < L; j++) d[j] = p[j] * (d[j] - dot) * scale;
            }
            /* dq = dS k; dk = dS^T q */
            fed_gemm(false, false, L, hd, L, 1.0f, dprob, L, k, ld, 0.0f, dq, ld);
            fed_gemm(true, false, L, hd, L, 1.0f, dprob, L, q, ld, 0.0f, dk, ld);
        }
    }
}

void fed_meanpool_forward(float *out, const float *inp, const fed_seqs *seq, size_t D) {
    for (size_t n = 0; n < seq->N; n++) {
        size_t L = rows_of(seq, n);
        const float *x = inp + first_row(seq, n) * D;
        float *y = out + n * D;
        memset(y, 0, D * sizeof(float));
        for (size_t t = 0; t < L; t++)
            for (size_t c = 0; c < D; c++) y[c] += x[t * D + c];
        float inv = 1.0f / (float)L;
        for (size_t c = 0; c < D; c++) y[c] *= inv;
    }
}

void fed_meanpool_backward(float *dinp, const float *dout, const fed_seqs *seq, size_t D) {
    for (size_t n = 0; n < seq->N; n++) {
        size_t L = rows_of(seq, n);
        float inv = 1.0f / (float)L, *dx = dinp + first_row(seq, n) * D;
        const float *dy = dout + n * D;
        for (size_t t = 0; t < L; t++)
            for (size_t c = 0; c < D; c++) dx[t * D + c] = dy[c] * inv;
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
