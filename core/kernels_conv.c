/* Convolution (im2col + gemm, one example at a time so the column buffer stays small
 * and cache-resident) and 2-D pooling. */
#include "core/blas.h"
#include "core/kernels.h"

#include <assert.h>
#include <float.h>
#include <string.h>

int fed_conv_geom_init(fed_conv_geom *g, size_t C, size_t H, size_t W, size_t OC, size_t K,
                       size_t stride, size_t pad) {
    if (C == 0 || H == 0 || W == 0 || OC == 0 || K == 0 || stride == 0) return 0;
    if (H + 2 * pad < K || W + 2 * pad < K) return 0;
    g->C = C;
    g->H = H;
    g->W = W;
    g->OC = OC;
    g->K = K;
    g->stride = stride;
    g->pad = pad;
    g->OH = (H + 2 * pad - K) / stride + 1;
    g->OW = (W + 2 * pad - K) / stride + 1;
    return 1;
}

size_t fed_conv_col_size(const fed_conv_geom *g) {
    return g->C * g->K * g->K * g->OH * g->OW;
}

/* Output columns ow in [lo, hi) read input column iw = ow*S - P + kw inside [0, W). */
static void valid_range(const fed_conv_geom *g, size_t kw, size_t *lo, size_t *hi) {
    /* iw >= 0  <=>  ow*S >= P - kw */
    size_t l = 0;
    if (g->pad > kw) l = (g->pad - kw + g->stride - 1) / g->stride;
    /* iw <= W-1  <=>  ow*S <= W - 1 + P - kw */
    size_t h = 0;
    if (g->W - 1 + g->pad >= kw) h = (g->W - 1 + g->pad - kw) / g->stride + 1;
    if (h > g->OW) h = g->OW;
    if (l > h) l = h;
    *lo = l;
    *hi = h;
}

void fed_im2col(float *col, const float *img, const fed_conv_geom *g) {
    const size_t K = g->K, S = g->stride, P = g->pad, OH = g->OH, OW = g->OW;
    for (size_t c = 0; c < g->C; c++) {
        for (size_t kh = 0; kh < K; kh++) {
            for (size_t kw = 0; kw < K; kw++) {
                float *row = col + ((c * K + kh) * K + kw) * OH * OW;
                size_t lo, hi;
                valid_range(g, kw, &lo, &hi);
                for (size_t oh = 0; oh < OH; oh++) {
                    float *dst = row + oh * OW;
                    size_t ih_p = oh * S + kh; /* ih + P */
                    if (ih_p < P || ih_p - P >= g->H) {
                        memset(dst, 0, OW * sizeof(float));
                        continue;
                    }
                    const float *src = img + (c * g->H + (ih_p - P)) * g->W;
                    for (size_t ow = 0; ow < lo; ow++) dst[ow] = 0.0f;
                    if (S == 1) {
                        if (hi > lo)
                            memcpy(dst + lo, src + (lo + kw - P), (hi - lo) * sizeof(float));
                    } else {
                        for (size_t ow = lo; ow < hi; ow++) dst[ow] = src[(ow * S + kw) - P];
                    }
                    for (size_t ow = hi; ow < OW; ow++) dst[ow] = 0.0f;
                }
            }
        }
    }
}

void fed_col2im(float *img, const float *col, const fed_conv_geom *g) {
    const size_t K = g->K, S = g->stride, P = g->pad, OH = g->OH, OW = g->OW;
    for (size_t c = 0; c < g->C; c++) {
        for (size_t kh = 0; kh < K; kh++) {
            for (size_t kw = 0; kw < K; kw++) {
                const float *row = col + ((c * K + kh) * K + kw) * OH * OW;
                size_t lo, hi;
                valid_range(g, kw, &lo, &hi);
                for (size_t oh = 0; oh < OH; oh++) {
                    size_t ih_p = oh * S + kh;
                    if (ih_p < P || ih_p - P >= g->H) continue;
                    float *dst = img + (c * g->H + (ih_p - P)) * g->W;
                    const float *src = row + oh * OW;
                    for (size_t ow = lo; ow < hi; ow++) dst[(ow * S + kw) - P] += src[ow];
                }
            }
        }
    }
}

void fed_conv2d_forward(float *out, float *col, const float *inp, const float *w, const float *b,
                        size_t N, const fed_conv_geom *g) {
    const size_t CKK = g->C * g->K * g->K, L = g->OH * g->OW;
    for (size_t n = 0; n < N; n++) {
        float *y = out + n * g->OC * L;
        fed_im2col(col, inp + n * g->C * g->H * g->W, g);
        fed_gemm(false, false, g->OC, L, CKK, 1.0f, w, CKK, col, L, 0.0f, y, L);
        if (b) {
            for (size_t o = 0; o < g->OC; o++) {
                float *plane = y + o * L;
                for (size_t i = 0; i < L; i++) plane[i] += b[o];
            }
        }
    }
}

void fed_conv2d_backward(float *dinp, float *dw, float *db, float *col, const float *dout,
                         const float *inp, const float *w, size_t N, const fed_conv_geom *g) {
    const size_t CKK = g->C * g->K * g->K, L = g->OH * g->OW, IMG = g->C * g->H * g->W;
    for (size_t n = 0; n < N; n++) {
        const float *dy = dout + n * g->OC * L;
        if (db) {
            for (size_t o = 0; o < g->OC; o++) {
                float s = 0.0f;
                for (size_t i = 0; i < L; i++) s += dy[o * L + i];
                db[o] += s;
            }
        }
        if (dw) {
            fed_im2col(col, inp + n * IMG, g);
            fed_gemm(false, true, g->OC, CKK, L, 1.0f, dy, L, col, L, 1.0f, dw, CKK);
        }
        if (dinp) {
            /* dcol (CKK, L) = w^T (CKK, OC) @ dy (OC, L), reusing the column buffer. */
            fed_gemm(true, false, CKK, L, g->OC, 1.0f, w, CKK, dy, L, 0.0f, col, L);
            float *dx = dinp + n * IMG;
            memset(dx, 0, IMG * sizeof(float));
            fed_col2im(dx, col, g);
        }
    }
}

/* Input value at (c, ih+P, iw+P) of the padded image, 0 outside. */
static float padded_at(const float *img, const fed_conv_geom *g, size_t c, size_t ihp, size_t iwp) {
    if (ihp < g->pad || iwp < g->pad) return 0.0f;
    size_t ih = ihp - g->pad, iw = iwp - g->pad;
    if (ih >= g->H || iw >= g->W) return 0.0f;
    return img[(c * g->H + ih) * g->W + iw];
}

void fed_conv2d_forward_ref(float *out, const float *inp, const float *w, const float *b, size_t N,
                            const fed_conv_geom *g) {
    const size_t K = g->K;
    for (size_t n = 0; n < N; n++) {
        const float *img = inp + n * g->C * g->H * g->W;
        for (size_t o = 0; o < g->OC; o++) {
            for (size_t oh = 0; oh < g->OH; oh++) {
                for (size_t ow = 0; ow < g->OW; ow++) {
                    double acc = b ? (double)b[o] : 0.0;
                    for (size_t c = 0; c < g->C; c++)
                        for (size_t kh = 0; kh < K; kh++)
                            for (size_t kw = 0; kw < K; kw++)
                                acc += (double)w[((o * g->C + c) * K + kh) * K + kw] *
                                       (double)padded_at(img, g, c, oh * g->stride + kh,
                                                         ow * g->stride + kw);
                    out[((n * g->OC + o) * g->OH + oh) * g->OW + ow] = (float)acc;
                }
            }
        }
    }
}

void fed_conv2d_backward_ref(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                             const float *w, size_t N, const fed_conv_geom *g) {
    const size_t K = g->K, IMG = g->C * g->H * g->W;
    if (dinp) memset(dinp, 0, N * IMG * sizeof(float));
    for (size_t n = 0; n < N; n++) {
        const float *img = inp + n * IMG;
        for (size_t o = 0; o < g->OC; o++) {
            for (size_t oh = 0; oh < g->OH; oh++) {
                for (size_t ow = 0; ow < g->OW; ow++) {
                    float dy = dout[((n * g->OC + o) * g->OH + oh) * g->OW + ow];
                    if (db) db[o] += dy;
                    for (size_t c = 0; c < g->C; c++) {
                        for (size_t kh = 0; kh < K; kh++) {
                            for (size_t kw = 0; kw < K; kw++) {
                                size_t ihp = oh * g->stride + kh, iwp = ow * g->stride + kw;
                                size_t wi = ((o * g->C + c) * K + kh) * K + kw;
                                if (dw) dw[wi] += dy * padded_at(img, g, c, ihp, iwp);
                                if (dinp && ihp >= g->pad && iwp >= g->pad && ihp - g->pad < g->H &&
                                    iwp - g->pad < g->W)
                                    dinp[n * IMG + (c * g->H + ihp - g->pad) * g->W + iwp -
                                         g->pad] += dy * w[wi];
                            }
                        }
                    }
                }
            }
        }
    }
}

/* ---- pooling ---------------------------------------------------------------------- */

void fed_maxpool2d_forward(float *out, int32_t *argmax, const float *inp, size_t N, size_t C,
                           size_t H, size_t W, size_t K, size_t S) {
    assert(K >= 1 && S >= 1 && H >= K && W >= K && H * W <= INT32_MAX);
    const size_t OH = (H - K) / S + 1, OW = (W - K) / S + 1;
    for (size_t p = 0; p < N * C; p++) {
        const float *x = inp + p * H * W;
        float *y = out + p * OH * OW;
        int32_t *am = argmax + p * OH * OW;
        for (size_t oh = 0; oh < OH; oh++) {
            for (size_t ow = 0; ow < OW; ow++) {
                size_t best = oh * S * W + ow * S;
                for (size_t kh = 0; kh < K; kh++) {
                    for (size_t kw = 0; kw < K; kw++) {
                        size_t i = (oh * S + kh) * W + ow * S + kw;
                        if (x[i] > x[best]) best = i;
                    }
                }
                y[oh * OW + ow] = x[best];
                am[oh * OW + ow] = (int32_t)best;
            }
        }
    }
}

void fed_maxpool2d_backward(float *dinp, const float *dout, const int32_t *argmax, size_t N,
                            size_t C, size_t H, size_t W, size_t K, size_t S) {
    const size_t OH = (H - K) / S + 1, OW = (W - K) / S + 1;
    memset(dinp, 0, N * C * H * W * sizeof(float));
    for (size_t p = 0; p < N * C; p++) {
        float *dx = dinp + p * H * W;
        const float *dy = dout + p * OH * OW;
        const int32_t *am = argmax + p * OH * OW;
        for (size_t i = 0; i < OH * OW; i++) dx[am[i]] += dy[i];
    }
}

void fed_avgpool2d_forward(float *out, const float *inp, size_t N, size_t C, size_t H, size_t W,
                           size_t K, size_t S) {
    assert(K >= 1 && S >= 1 && H >= K && W >= K);
    const size_t OH = (H - K) / S + 1, OW = (W - K) / S + 1;
    const float inv = 1.0f / (float)(K * K);
    for (size_t p = 0; p < N * C; p++) {
        const float *x = inp + p * H * W;
        float *y = out + p * OH * OW;
        for (size_t oh = 0; oh < OH; oh++) {
            for (size_t ow = 0; ow < OW; ow++) {
                float s = 0.0f;
                for (size_t kh = 0; kh < K; kh++)
                    for (size_t kw = 0; kw < K; kw++) s += x[(oh * S + kh) * W + ow * S + kw];
                y[oh * OW + ow] = s * inv;
            }
        }
    }
}

void fed_avgpool2d_backward(float *dinp, const float *dout, size_t N, size_t C, size_t H, size_t W,
                            size_t K, size_t S) {
    const size_t OH = (H - K) / S + 1, OW = (W - K) / S + 1;
    const float inv = 1.0f / (float)(K * K);
    memset(dinp, 0, N * C * H * W * sizeof(float));
    for (size_t p = 0; p < N * C; p++) {
        float *dx = dinp + p * H * W;
        const float *dy = dout + p * OH * OW;
        for (size_t oh = 0; oh < OH; oh++) {
            for (size_t ow = 0; ow < OW; ow++) {
                float g = dy[oh * OW + ow] * inv;
                for (size_t kh = 0; kh < K; kh++)
                    for (size_t kw = 0; kw < K; kw++) dx[(oh * S + kh) * W + ow * S + kw] += g;
            }
        }
    }
}

void fed_globalavgpool_forward(float *out, const float *inp, size_t N, size_t C, size_t HW) {
    for (size_t p = 0; p < N * C; p++) {
        const float *x = inp + p * HW;
        double s = 0.0;
        for (size_t i = 0; i < HW; i++) s += (double)x[i];
        out[p] = (float)(s / (double)HW);
    }
}

void fed_globalavgpool_backward(float *dinp, const float *dout, size_t N, size_t C, size_t HW) {
    for (size_t p = 0; p < N * C; p++) {
        float g = dout[p] / (float)HW;
        float *dx = dinp + p * HW;
        for (size_t i = 0; i < HW; i++) dx[i] = g;
    }
}
