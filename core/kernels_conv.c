/* Convolution (im2col + gemm over groups of examples: one GEMM per group and layer,
 * the column buffer of a group bounded, see fed_conv_group) and 2-D pooling. */
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

/* Stride 1 and OW == W ("same" padding): the valid part of row (c, kh, kw) is the
 * image plane shifted by (kh - P) rows and (kw - P) columns, so it is one contiguous
 * copy from the first to the last valid element, after which the few elements that
 * wrapped around a row edge (and the all-padding rows) are zeroed. */
static void im2col_same(float *restrict col, size_t ld, const float *restrict img,
                        const fed_conv_geom *g) {
    const size_t K = g->K, P = g->pad, H = g->H, W = g->W, OH = g->OH;
    for (size_t c = 0; c < g->C; c++) {
        const float *plane = img + c * H * W;
        for (size_t kh = 0; kh < K; kh++) {
            /* oh in [o0, o1) reads image row oh + kh - P inside [0, H). */
            size_t o0 = P > kh ? P - kh : 0, o1 = H + P > kh ? H + P - kh : 0;
            if (o0 > OH) o0 = OH;
            if (o1 > OH) o1 = OH;
            if (o1 < o0) o1 = o0;
            for (size_t kw = 0; kw < K; kw++) {
                float *row = col + ((c * K + kh) * K + kw) * ld;
                size_t lo, hi;
                valid_range(g, kw, &lo, &hi);
                memset(row, 0, o0 * W * sizeof(float));
                memset(row + o1 * W, 0, (OH - o1) * W * sizeof(float));
                if (o1 == o0 || hi == lo) {
                    memset(row + o0 * W, 0, (o1 - o0) * W * sizeof(float));
                    continue;
                }
                size_t first = o0 * W + lo, last = (o1 - 1) * W + hi; /* [first, last) */
                /* dst index i = oh*W + ow reads plane[(oh + kh - P)*W + ow + kw - P]. */
                memcpy(row + first, plane + (first + kh * W + kw) - (P * W + P),
                       (last - first) * sizeof(float));
                for (size_t oh = o0; oh < o1; oh++) {
                    float *d = row + oh * W;
                    for (size_t ow = 0; ow < lo; ow++) d[ow] = 0.0f;
                    for (size_t ow = hi; ow < W; ow++) d[ow] = 0.0f;
                }
            }
        }
    }
}

/* im2col with row r of the columns at col + r * ld (ld >= OH*OW), so that a group of
 * examples can sit side by side in one (C*K*K, G*OH*OW) matrix. The rows are short
 * (OW floats), so plain loops the compiler vectorizes beat memcpy/memset calls. */
static void im2col_ld(float *restrict col, size_t ld, const float *restrict img,
                      const fed_conv_geom *g) {
    const size_t K = g->K, S = g->stride, P = g->pad, OH = g->OH, OW = g->OW;
    if (S == 1 && OW == g->W) {
        im2col_same(col, ld, img, g);
        return;
    }
    for (size_t c = 0; c < g->C; c++) {
        for (size_t kh = 0; kh < K; kh++) {
            for (size_t kw = 0; kw < K; kw++) {
                float *row = col + ((c * K + kh) * K + kw) * ld;
                size_t lo, hi;
                valid_range(g, kw, &lo, &hi);
                for (size_t oh = 0; oh < OH; oh++) {
                    float *restrict dst = row + oh * OW;
                    size_t ih_p = oh * S + kh; /* ih + P */
                    if (ih_p < P || ih_p - P >= g->H) {
                        for (size_t ow = 0; ow < OW; ow++) dst[ow] = 0.0f;
                        continue;
                    }
                    const float *restrict src = img + (c * g->H + (ih_p - P)) * g->W;
                    for (size_t ow = 0; ow < lo; ow++) dst[ow] = 0.0f;
                    if (S == 1) {
                        const float *restrict s1 = src + kw - P; /* s1[ow], ow >= lo, in range */
                        for (size_t ow = lo; ow < hi; ow++) dst[ow] = s1[ow];
                    } else {
                        for (size_t ow = lo; ow < hi; ow++) dst[ow] = src[(ow * S + kw) - P];
                    }
                    for (size_t ow = hi; ow < OW; ow++) dst[ow] = 0.0f;
                }
            }
        }
    }
}

/* The adjoint: img (C, H, W) += the columns at row stride ld scattered back. */
static void col2im_ld(float *restrict img, const float *restrict col, size_t ld,
                      const fed_conv_geom *g) {
    const size_t K = g->K, S = g->stride, P = g->pad, OH = g->OH, OW = g->OW;
    for (size_t c = 0; c < g->C; c++) {
        for (size_t kh = 0; kh < K; kh++) {
            for (size_t kw = 0; kw < K; kw++) {
                const float *row = col + ((c * K + kh) * K + kw) * ld;
                size_t lo, hi;
                valid_range(g, kw, &lo, &hi);
                for (size_t oh = 0; oh < OH; oh++) {
                    size_t ih_p = oh * S + kh;
                    if (ih_p < P || ih_p - P >= g->H) continue;
                    float *restrict dst = img + (c * g->H + (ih_p - P)) * g->W;
                    const float *restrict src = row + oh * OW;
                    if (S == 1) {
                        float *restrict d1 = dst + kw - P;
                        for (size_t ow = lo; ow < hi; ow++) d1[ow] += src[ow];
                    } else {
                        for (size_t ow = lo; ow < hi; ow++) dst[(ow * S + kw) - P] += src[ow];
                    }
                }
            }
        }
    }
}

void fed_im2col(float *col, const float *img, const fed_conv_geom *g) {
    im2col_ld(col, g->OH * g->OW, img, g);
}

void fed_col2im(float *img, const float *col, const fed_conv_geom *g) {
    col2im_ld(img, col, g->OH * g->OW, g);
}

/* Buffers of one group stay below this many floats (1 MB, a core's L2 cache). Measured
 * on the FedAvg CNN (bench/README.md): groups of 16 MB were 10-15% slower than one
 * example at a time, because the GEMM then streams its column buffer from L3; within
 * L2, small layers (conv1: 25 x 784 columns per example) get a few examples per GEMM. */
#ifndef GROUP_FLOATS
#define GROUP_FLOATS ((size_t)1 << 18)
#endif

size_t fed_conv_even_group(size_t N, size_t per, size_t budget) {
    if (N <= 1) return 1;
    size_t most = per ? budget / per : N;
    if (most < 1) most = 1;
    if (most >= N) return N;
    size_t groups = (N + most - 1) / most;
    return (N + groups - 1) / groups;
}

size_t fed_conv_group(const fed_conv_geom *g, size_t N) {
    return fed_conv_even_group(N, (g->C * g->K * g->K + g->OC) * g->OH * g->OW, GROUP_FLOATS);
}

size_t fed_conv_scratch_size(const fed_conv_geom *g, size_t G) {
    size_t L = g->OH * g->OW, cols = g->C * g->K * g->K * L * G;
    return G > 1 ? cols + g->OC * L * G : cols;
}

void fed_conv2d_forward_grouped(float *out, float *scratch, const float *inp, const float *w,
                                const float *b, size_t N, size_t G, const fed_conv_geom *g) {
    assert(G >= 1);
    const size_t CKK = g->C * g->K * g->K, L = g->OH * g->OW, IMG = g->C * g->H * g->W;
    const size_t OL = g->OC * L;
    float *col = scratch, *tmp = scratch + CKK * L * G;
    for (size_t n0 = 0; n0 < N; n0 += G) {
        const size_t gn = N - n0 < G ? N - n0 : G, ld = gn * L;
        for (size_t j = 0; j < gn; j++) im2col_ld(col + j * L, ld, inp + (n0 + j) * IMG, g);
        /* One example: straight into its output; a group: (OC, gn*L), then scattered
         * to NCHW in the pass that adds the bias. */
        float *y = gn == 1 ? out + n0 * OL : tmp;
        fed_gemm(false, false, g->OC, ld, CKK, 1.0f, w, CKK, col, ld, 0.0f, y, ld);
        for (size_t j = 0; j < gn; j++) {
            float *dst = out + (n0 + j) * OL;
            for (size_t o = 0; o < g->OC; o++) {
                float *restrict d = dst + o * L;
                const float *restrict s = y + o * ld + j * L;
                const float bo = b ? b[o] : 0.0f;
                if (gn == 1) {
                    if (b)
                        for (size_t i = 0; i < L; i++) d[i] += bo;
                } else {
                    for (size_t i = 0; i < L; i++) d[i] = s[i] + bo;
                }
            }
        }
    }
}

void fed_conv2d_forward(float *out, float *col, const float *inp, const float *w, const float *b,
                        size_t N, const fed_conv_geom *g) {
    fed_conv2d_forward_grouped(out, col, inp, w, b, N, 1, g);
}

/* dy of examples n0..n0+gn gathered to (OC, gn*L) with db += its row sums in the same
 * pass; one example needs no gather (dy already is (OC, L)). Returns the matrix. */
static const float *gather_dy(float *restrict tmp, float *db, const float *dout, size_t n0,
                              size_t gn, const fed_conv_geom *g) {
    const size_t L = g->OH * g->OW, OL = g->OC * L, ld = gn * L;
    if (gn == 1 && !db) return dout + n0 * OL;
    for (size_t o = 0; o < g->OC; o++) {
        float acc[16] = {0}; /* sixteen partial sums: a sum the compiler may vectorize */
        for (size_t j = 0; j < gn; j++) {
            const float *restrict src = dout + (n0 + j) * OL + o * L;
            if (gn > 1) memcpy(tmp + o * ld + j * L, src, L * sizeof(float));
            if (!db) continue;
            size_t i = 0;
            for (; i + 16 <= L; i += 16)
                for (size_t k = 0; k < 16; k++) acc[k] += src[i + k];
            for (; i < L; i++) acc[i % 16] += src[i];
        }
        if (!db) continue;
        float s = 0.0f;
        for (size_t k = 0; k < 16; k++) s += acc[k];
        db[o] += s;
    }
    return gn > 1 ? tmp : dout + n0 * OL;
}

void fed_conv2d_backward_grouped(float *dinp, float *dw, float *db, float *scratch,
                                 const float *dout, const float *inp, const float *w, size_t N,
                                 size_t G, const fed_conv_geom *g) {
    assert(G >= 1);
    const size_t CKK = g->C * g->K * g->K, L = g->OH * g->OW, IMG = g->C * g->H * g->W;
    float *col = scratch, *tmp = scratch + CKK * L * G;
    for (size_t n0 = 0; n0 < N; n0 += G) {
        const size_t gn = N - n0 < G ? N - n0 : G, ld = gn * L;
        const float *dy = gather_dy(tmp, db, dout, n0, gn, g);
        if (dw) {
            for (size_t j = 0; j < gn; j++) im2col_ld(col + j * L, ld, inp + (n0 + j) * IMG, g);
            fed_gemm(false, true, g->OC, CKK, ld, 1.0f, dy, ld, col, ld, 1.0f, dw, CKK);
        }
        if (dinp) {
            /* dcol (CKK, gn*L) = w^T (CKK, OC) @ dy (OC, gn*L), in the column buffer. */
            fed_gemm(true, false, CKK, ld, g->OC, 1.0f, w, CKK, dy, ld, 0.0f, col, ld);
            float *dx = dinp + n0 * IMG;
            memset(dx, 0, gn * IMG * sizeof(float));
            for (size_t j = 0; j < gn; j++) col2im_ld(dx + j * IMG, col + j * L, ld, g);
        }
    }
}

void fed_conv2d_backward(float *dinp, float *dw, float *db, float *col, const float *dout,
                         const float *inp, const float *w, size_t N, const fed_conv_geom *g) {
    fed_conv2d_backward_grouped(dinp, dw, db, col, dout, inp, w, N, 1, g);
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
