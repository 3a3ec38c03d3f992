/* Winograd F(2x2, 5x5) for 5x5 stride-1 "same" (pad 2) convolutions (Lavin & Gray
 * 2015): 6x6 input tiles give 2x2 outputs with 36 multiplies per tile and channel
 * pair instead of 100, done as 36 GEMMs (OUT x IN) @ (IN x tiles).
 *
 * The matrices are the Toom-Cook construction for the points p = 0, 1, -1, 2, -2 and
 * infinity. The linear convolution s = g * u of a 5-tap g and a 2-tap u evaluates both
 * polynomials at the points (Vandermonde rows (1, p, p^2, ...); infinity takes the
 * leading coefficient), multiplies, and interpolates with the inverse Vandermonde C,
 * whose column i holds the coefficients of the Lagrange basis polynomial of point i:
 * L_i(x) = prod_{k != i} (x - p_k) / f_i, f_i = prod_{k != i} (p_i - p_k) = 4, -6, -6,
 * 24, 24 over the finite points, and x (x^2 - 1)(x^2 - 4) for infinity. Correlation
 * y = T(g)^T d is that algorithm transposed: y = A^T [(G g) .* (B^T d)] with A^T the
 * 2-column Vandermonde transposed, row i of B^T = |f_i| L_i (integers) and row i of G =
 * (1, p_i, ..., p_i^4) / |f_i| (infinity: e_5, and 1 for both). Derived and checked
 * with exact fractions; tests/test_core_wino.c checks the 1-D form in float against
 * direct correlation, and the 2-D kernels against the naive references. */
#include "core/blas.h"
#include "core/kernels.h"

#include <assert.h>
#include <string.h>

#define T36 36 /* transformed points per tile */

/* y = A^T m, m of 6 -> y of 2: rows (1 1 1 1 1 0), (0 1 -1 2 -2 1). */
static inline void at6(float y[2], const float m[6], size_t s) {
    y[0] = m[0] + m[s] + m[2 * s] + m[3 * s] + m[4 * s];
    y[1] = m[s] - m[2 * s] + 2.0f * (m[3 * s] - m[4 * s]) + m[5 * s];
}

/* v = G g, g of 5 (stride s) -> v of 6. */
static inline void g5(float v[6], const float *g, size_t s) {
    const float g0 = g[0], g1 = g[s], g2 = g[2 * s], g3 = g[3 * s], g4 = g[4 * s];
    v[0] = g0 * 0.25f;
    v[1] = (g0 + g1 + g2 + g3 + g4) * (1.0f / 6.0f);
    v[2] = (g0 - g1 + g2 - g3 + g4) * (1.0f / 6.0f);
    v[3] = (g0 + 2.0f * g1 + 4.0f * g2 + 8.0f * g3 + 16.0f * g4) * (1.0f / 24.0f);
    v[4] = (g0 - 2.0f * g1 + 4.0f * g2 - 8.0f * g3 + 16.0f * g4) * (1.0f / 24.0f);
    v[5] = g4;
}

/* v = B^T d, d of 6 (stride s). Rows: (4 0 -5 0 1 0), (0 4 4 -1 -1 0), (0 -4 4 1 -1 0),
 * (0 -2 -1 2 1 0), (0 2 -1 -2 1 0), (0 4 0 -5 0 1). */
static inline void bt6(float v[6], const float *d, size_t s) {
    const float d0 = d[0], d1 = d[s], d2 = d[2 * s], d3 = d[3 * s], d4 = d[4 * s], d5 = d[5 * s];
    v[0] = 4.0f * d0 - 5.0f * d2 + d4;
    v[1] = 4.0f * (d1 + d2) - (d3 + d4);
    v[2] = 4.0f * (d2 - d1) + (d3 - d4);
    v[3] = 2.0f * (d3 - d1) + (d4 - d2);
    v[4] = 2.0f * (d1 - d3) + (d4 - d2);
    v[5] = 4.0f * d1 - 5.0f * d3 + d5;
}

void fed_wino25_1d(float y[2], const float d[6], const float g[5]) {
    float u[6], v[6], m[6];
    g5(u, g, 1);
    bt6(v, d, 1);
    for (int i = 0; i < 6; i++) m[i] = u[i] * v[i];
    at6(y, m, 1);
}

int fed_conv_wino_fits(const fed_conv_geom *g) {
    return g->K == 5 && g->stride == 1 && g->pad == 2;
}

/* Tiles per example: ceil(H/2) x ceil(W/2) (OH = H, OW = W here). */
static size_t tiles_of(const fed_conv_geom *g) {
    return ((g->H + 1) / 2) * ((g->W + 1) / 2);
}

/* A group's V (36, IN, T) and M (36, OUT, T) stay below this many floats (1 MB, in a
 * core's L2 cache) unless one example needs more. Measured on the FedAvg CNN's conv2
 * (one example: 169 344 floats): groups of up to 4 MB were no faster at batch 64 and
 * 5-7% slower at batch 10 (process CPU time, bench_core). */
#ifndef WINO_FLOATS
#define WINO_FLOATS ((size_t)1 << 18)
#endif

size_t fed_conv_wino_group(const fed_conv_geom *g, size_t N) {
    return fed_conv_even_group(N, T36 * (g->C + g->OC) * tiles_of(g), WINO_FLOATS);
}

size_t fed_conv_wino_scratch_size(const fed_conv_geom *g, size_t G) {
    return T36 * g->C * g->OC + T36 * (g->C + g->OC) * tiles_of(g) * G;
}

/* The transforms work on CH kernels or tiles at a time, so that every inner loop
 * runs over those CH lanes with unit stride (stride 2 on an input row) and vectorizes. */
#define CH 8

/* The transforms are short loops of adds and multiplies: built once for the baseline
 * x86-64 (SSE2) and once for AVX2 with FMA, the loader picking the CPU's (GCC's
 * target_clones; an ifunc, so only on x86-64 ELF). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define VEC_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define VEC_CLONES
#endif

/* U (36, OUT, IN) from w (OC, C, 5, 5): U[xi][o][c] = (G w[o][c] G^T)[xi]. With flip,
 * the input-gradient kernel: OUT = C, IN = OC, each 5x5 rotated by 180 degrees. The
 * kernels are done CH at a time along U's rows (c, or o with flip), every step a loop
 * over those CH lanes. */
VEC_CLONES static void transform_weights(float *restrict U, const float *restrict w, size_t OC,
                                         size_t C, int flip) {
    const size_t OUT = flip ? C : OC, IN = flip ? OC : C;
    /* Kernel (row, col) of U sits at w + row * rs + col * cs. */
    const size_t rs = flip ? 25 : C * 25, cs = flip ? C * 25 : 25;
    float r[25][CH], t[5][6][CH];
    for (size_t row = 0; row < OUT; row++) {
        for (size_t c0 = 0; c0 < IN; c0 += CH) {
            const size_t nt = IN - c0 < CH ? IN - c0 : CH;
            for (size_t l = 0; l < nt; l++) {
                const float *k = w + row * rs + (c0 + l) * cs;
                for (size_t i = 0; i < 25; i++) r[i][l] = k[flip ? 24 - i : i];
            }
            /* t[i][a] = G r[i][:] along each kernel row i: (r G^T) */
            for (size_t i = 0; i < 5; i++) {
                for (size_t l = 0; l < nt; l++) {
                    const float g0 = r[i * 5][l], g1 = r[i * 5 + 1][l], g2 = r[i * 5 + 2][l];
                    const float g3 = r[i * 5 + 3][l], g4 = r[i * 5 + 4][l];
                    t[i][0][l] = g0 * 0.25f;
                    t[i][1][l] = (g0 + g1 + g2 + g3 + g4) * (1.0f / 6.0f);
                    t[i][2][l] = (g0 - g1 + g2 - g3 + g4) * (1.0f / 6.0f);
                    t[i][3][l] =
                        (g0 + 2.0f * g1 + 4.0f * g2 + 8.0f * g3 + 16.0f * g4) * (1.0f / 24.0f);
                    t[i][4][l] =
                        (g0 - 2.0f * g1 + 4.0f * g2 - 8.0f * g3 + 16.0f * g4) * (1.0f / 24.0f);
                    t[i][5][l] = g4;
                }
            }
            /* U[a * 6 + b] = (G t[:][b])[a] down the columns */
            float *dst = U + row * IN + c0;
            const size_t XS = OUT * IN;
            for (size_t b = 0; b < 6; b++) {
                float *restrict u0 = dst + b * XS, *restrict u1 = u0 + 6 * XS;
                float *restrict u2 = u1 + 6 * XS, *restrict u3 = u2 + 6 * XS;
                float *restrict u4 = u3 + 6 * XS, *restrict u5 = u4 + 6 * XS;
                for (size_t l = 0; l < nt; l++) {
                    const float g0 = t[0][b][l], g1 = t[1][b][l], g2 = t[2][b][l];
                    const float g3 = t[3][b][l], g4 = t[4][b][l];
                    u0[l] = g0 * 0.25f;
                    u1[l] = (g0 + g1 + g2 + g3 + g4) * (1.0f / 6.0f);
                    u2[l] = (g0 - g1 + g2 - g3 + g4) * (1.0f / 6.0f);
                    u3[l] = (g0 + 2.0f * g1 + 4.0f * g2 + 8.0f * g3 + 16.0f * g4) * (1.0f / 24.0f);
                    u4[l] = (g0 - 2.0f * g1 + 4.0f * g2 - 8.0f * g3 + 16.0f * g4) * (1.0f / 24.0f);
                    u5[l] = g4;
                }
            }
        }
    }
}

/* V (36, IN, ld) at this example's columns from x (IN, H, W): the 6x6 patch of tile
 * (ty, tx) is rows 2*ty - 2 .. +5, columns 2*tx - 2 .. +5 (zeros outside), and
 * V = B^T d B: first each patch row times B (along x), then B^T down the columns.
 * The lanes past the last tile compute on zeros and are not stored. */
VEC_CLONES static void transform_input(float *restrict V, size_t ld, size_t IN,
                                       const float *restrict x, size_t H, size_t W) {
    const size_t TH = (H + 1) / 2, TW = (W + 1) / 2, XS = IN * ld;
    float buf[6][2 * CH + 4], tmp[6][6][CH], out[6][CH];
    for (size_t c = 0; c < IN; c++) {
        const float *plane = x + c * H * W;
        for (size_t ty = 0; ty < TH; ty++) {
            for (size_t t0 = 0; t0 < TW; t0 += CH) {
                const size_t nt = TW - t0 < CH ? TW - t0 : CH;
                /* buf[i][j] = x[2ty + i - 2][2t0 + j - 2]: columns [lo, hi) in the image.
                 * Plain loops: these rows are short. */
                const size_t lo = t0 == 0 ? 2 : 0, hi0 = W + 2 - 2 * t0;
                const size_t hi = hi0 < 2 * CH + 4 ? hi0 : 2 * CH + 4;
                for (size_t i = 0; i < 6; i++) {
                    const size_t yp = 2 * ty + i; /* image row + 2 */
                    float *restrict bi = buf[i];
                    /* Fixed length: vector stores (a variable one became rep stos). */
                    for (size_t j = 0; j < 2 * CH + 4; j++) bi[j] = 0.0f;
                    if (yp < 2 || yp - 2 >= H) continue;
                    const float *restrict src = plane + (yp - 2) * W + 2 * t0;
                    for (size_t j = lo; j < hi; j++) bi[j] = src[j - 2];
                }
                for (size_t i = 0; i < 6; i++) {
                    const float *b = buf[i];
                    for (size_t t = 0; t < CH; t++) {
                        const float *d = b + 2 * t;
                        tmp[i][0][t] = 4.0f * d[0] - 5.0f * d[2] + d[4];
                        tmp[i][1][t] = 4.0f * (d[1] + d[2]) - (d[3] + d[4]);
                        tmp[i][2][t] = 4.0f * (d[2] - d[1]) + (d[3] - d[4]);
                        tmp[i][3][t] = 2.0f * (d[3] - d[1]) + (d[4] - d[2]);
                        tmp[i][4][t] = 2.0f * (d[1] - d[3]) + (d[4] - d[2]);
                        tmp[i][5][t] = 4.0f * d[1] - 5.0f * d[3] + d[5];
                    }
                }
                float *dst = V + c * ld + ty * TW + t0;
                for (size_t k = 0; k < 6; k++) {
                    for (size_t t = 0; t < CH; t++) {
                        const float d0 = tmp[0][k][t], d1 = tmp[1][k][t], d2 = tmp[2][k][t];
                        const float d3 = tmp[3][k][t], d4 = tmp[4][k][t], d5 = tmp[5][k][t];
                        out[0][t] = 4.0f * d0 - 5.0f * d2 + d4;
                        out[1][t] = 4.0f * (d1 + d2) - (d3 + d4);
                        out[2][t] = 4.0f * (d2 - d1) + (d3 - d4);
                        out[3][t] = 2.0f * (d3 - d1) + (d4 - d2);
                        out[4][t] = 2.0f * (d1 - d3) + (d4 - d2);
                        out[5][t] = 4.0f * d1 - 5.0f * d3 + d5;
                    }
                    for (size_t l = 0; l < 6; l++) {
                        float *restrict o = dst + (l * 6 + k) * XS;
                        for (size_t t = 0; t < nt; t++) o[t] = out[l][t];
                    }
                }
            }
        }
    }
}

/* One example's y (OUT, H, W) from M (36, OUT, ld) at its tile columns: Y = A^T m A
 * (A^T down the columns, then along the rows), the outputs inside the image kept,
 * plus the bias. */
VEC_CLONES static void transform_output(float *restrict y, const float *restrict M, size_t ld,
                                        size_t OUT, const float *b, size_t H, size_t W) {
    const size_t TH = (H + 1) / 2, TW = (W + 1) / 2, XS = OUT * ld;
    float m[36][CH], tmp[2][6][CH], row[2][2 * CH];
    memset(m, 0, sizeof m);
    for (size_t o = 0; o < OUT; o++) {
        const float bo = b ? b[o] : 0.0f;
        float *plane = y + o * H * W;
        for (size_t ty = 0; ty < TH; ty++) {
            for (size_t t0 = 0; t0 < TW; t0 += CH) {
                const size_t nt = TW - t0 < CH ? TW - t0 : CH;
                const float *src = M + o * ld + ty * TW + t0;
                for (size_t xi = 0; xi < 36; xi++) {
                    const float *restrict s = src + xi * XS;
                    for (size_t t = 0; t < nt; t++) m[xi][t] = s[t];
                }
                for (size_t k = 0; k < 6; k++) {
                    for (size_t t = 0; t < CH; t++) {
                        const float m0 = m[k][t], m1 = m[6 + k][t], m2 = m[12 + k][t];
                        const float m3 = m[18 + k][t], m4 = m[24 + k][t], m5 = m[30 + k][t];
                        tmp[0][k][t] = m0 + m1 + m2 + m3 + m4;
                        tmp[1][k][t] = m1 - m2 + 2.0f * (m3 - m4) + m5;
                    }
                }
                for (size_t a = 0; a < 2; a++) {
                    for (size_t t = 0; t < CH; t++) {
                        const float d0 = tmp[a][0][t], d1 = tmp[a][1][t], d2 = tmp[a][2][t];
                        const float d3 = tmp[a][3][t], d4 = tmp[a][4][t], d5 = tmp[a][5][t];
                        row[a][2 * t] = d0 + d1 + d2 + d3 + d4 + bo;
                        row[a][2 * t + 1] = d1 - d2 + 2.0f * (d3 - d4) + d5 + bo;
                    }
                }
                const size_t ox = 2 * t0, nx = W - ox < 2 * nt ? W - ox : 2 * nt;
                for (size_t a = 0; a < 2 && 2 * ty + a < H; a++) {
                    float *restrict d = plane + (2 * ty + a) * W + ox;
                    for (size_t i = 0; i < nx; i++) d[i] = row[a][i];
                }
            }
        }
    }
}

/* out (N, OUT, H, W) = the 5x5 "same" convolution of x (N, IN, H, W) with the
 * transformed weights U, in groups of G examples. */
static void wino_run(float *out, float *work, const float *U, const float *x, const float *b,
                     size_t N, size_t G, size_t IN, size_t OUT, size_t H, size_t W) {
    const size_t TT = ((H + 1) / 2) * ((W + 1) / 2), HW = H * W;
    float *V = work, *M = work + T36 * IN * TT * G;
    for (size_t n0 = 0; n0 < N; n0 += G) {
        const size_t gn = N - n0 < G ? N - n0 : G, ld = gn * TT;
        for (size_t j = 0; j < gn; j++)
            transform_input(V + j * TT, ld, IN, x + (n0 + j) * IN * HW, H, W);
        for (size_t xi = 0; xi < T36; xi++)
            fed_gemm(false, false, OUT, ld, IN, 1.0f, U + xi * OUT * IN, IN, V + xi * IN * ld, ld,
                     0.0f, M + xi * OUT * ld, ld);
        for (size_t j = 0; j < gn; j++)
            transform_output(out + (n0 + j) * OUT * HW, M + j * TT, ld, OUT, b, H, W);
    }
}

void fed_conv2d_forward_wino(float *out, float *scratch, const float *inp, const float *w,
                             const float *b, size_t N, size_t G, const fed_conv_geom *g) {
    assert(fed_conv_wino_fits(g) && G >= 1);
    transform_weights(scratch, w, g->OC, g->C, 0);
    wino_run(out, scratch + T36 * g->C * g->OC, scratch, inp, b, N, G, g->C, g->OC, g->H, g->W);
}

/* dinp = the "same" convolution of dout with w rotated 180 degrees, C and OC swapped. */
void fed_conv2d_backward_data_wino(float *dinp, float *scratch, const float *dout, const float *w,
                                   size_t N, size_t G, const fed_conv_geom *g) {
    assert(fed_conv_wino_fits(g) && G >= 1);
    transform_weights(scratch, w, g->OC, g->C, 1);
    wino_run(dinp, scratch + T36 * g->C * g->OC, scratch, dout, NULL, N, G, g->OC, g->C, g->H,
             g->W);
}

/* dM (36, OC, ld) at this example's columns from dy (OC, H, W): dM = A dY A^T for each
 * 2x2 tile dY (zeros past the image), the gradient of M in Y = A^T M A. A v for
 * v = (v0, v1) is (v0, v0 + v1, v0 - v1, v0 + 2 v1, v0 - 2 v1, v1). */
VEC_CLONES static void transform_dout(float *restrict dM, size_t ld, size_t OC,
                                      const float *restrict dy, size_t H, size_t W) {
    const size_t TH = (H + 1) / 2, TW = (W + 1) / 2, XS = OC * ld;
    float r[2][2 * CH], tmp[6][2][CH];
    for (size_t o = 0; o < OC; o++) {
        const float *plane = dy + o * H * W;
        for (size_t ty = 0; ty < TH; ty++) {
            for (size_t t0 = 0; t0 < TW; t0 += CH) {
                const size_t nt = TW - t0 < CH ? TW - t0 : CH, ox = 2 * t0;
                const size_t nx = W - ox < 2 * nt ? W - ox : 2 * nt;
                for (size_t a = 0; a < 2; a++) {
                    for (size_t j = 0; j < 2 * CH; j++) r[a][j] = 0.0f;
                    if (2 * ty + a >= H) continue;
                    const float *restrict src = plane + (2 * ty + a) * W + ox;
                    for (size_t j = 0; j < nx; j++) r[a][j] = src[j];
                }
                for (size_t a = 0; a < 2; a++) { /* along x: (dY A^T) rows */
                    for (size_t t = 0; t < CH; t++) {
                        const float v0 = r[a][2 * t], v1 = r[a][2 * t + 1];
                        tmp[0][a][t] = v0;
                        tmp[1][a][t] = v0 + v1;
                        tmp[2][a][t] = v0 - v1;
                        tmp[3][a][t] = v0 + 2.0f * v1;
                        tmp[4][a][t] = v0 - 2.0f * v1;
                        tmp[5][a][t] = v1;
                    }
                }
                float *dst = dM + o * ld + ty * TW + t0;
                for (size_t k = 0; k < 6; k++) { /* down the columns: A (.) */
                    float out[6][CH];
                    for (size_t t = 0; t < CH; t++) {
                        const float v0 = tmp[k][0][t], v1 = tmp[k][1][t];
                        out[0][t] = v0;
                        out[1][t] = v0 + v1;
                        out[2][t] = v0 - v1;
                        out[3][t] = v0 + 2.0f * v1;
                        out[4][t] = v0 - 2.0f * v1;
                        out[5][t] = v1;
                    }
                    for (size_t l = 0; l < 6; l++) {
                        float *restrict d = dst + (l * 6 + k) * XS;
                        for (size_t t = 0; t < nt; t++) d[t] = out[l][t];
                    }
                }
            }
        }
    }
}

/* G^T u for u of 6 (stride s): the adjoint of g5. */
static inline void gt6(float v[5], const float *u, size_t s) {
    const float p12 = u[s] + u[2 * s], m12 = u[s] - u[2 * s];
    const float p34 = u[3 * s] + u[4 * s], m34 = u[3 * s] - u[4 * s];
    v[0] = 0.25f * u[0] + p12 * (1.0f / 6.0f) + p34 * (1.0f / 24.0f);
    v[1] = m12 * (1.0f / 6.0f) + m34 * (1.0f / 12.0f);
    v[2] = (p12 + p34) * (1.0f / 6.0f);
    v[3] = m12 * (1.0f / 6.0f) + m34 * (1.0f / 3.0f);
    v[4] = p12 * (1.0f / 6.0f) + p34 * (2.0f / 3.0f) + u[5 * s];
}

/* The weight gradient through the same factorization: with M = sum_c U .* V and
 * Y = A^T M A, dU[xi] (OC, C) = sum over tiles of dM[xi] (OC, tiles) @ V[xi]^T, one
 * GEMM per point and group with the tiles as the long inner dimension, and
 * dw += G^T dU G per kernel; db += the sums of dout. */
void fed_conv2d_backward_filter_wino(float *dw, float *db, float *scratch, const float *dout,
                                     const float *inp, size_t N, size_t G, const fed_conv_geom *g) {
    assert(fed_conv_wino_fits(g) && G >= 1);
    const size_t C = g->C, OC = g->OC, H = g->H, W = g->W, HW = H * W;
    const size_t TT = tiles_of(g);
    if (db) {
        for (size_t n = 0; n < N; n++) {
            for (size_t o = 0; o < OC; o++) {
                const float *restrict p = dout + (n * OC + o) * HW;
                float acc[8] = {0};
                size_t i = 0;
                for (; i + 8 <= HW; i += 8)
                    for (size_t k = 0; k < 8; k++) acc[k] += p[i + k];
                for (; i < HW; i++) acc[i % 8] += p[i];
                db[o] += ((acc[0] + acc[4]) + (acc[1] + acc[5])) +
                         ((acc[2] + acc[6]) + (acc[3] + acc[7]));
            }
        }
    }
    if (!dw) return;
    float *dU = scratch, *V = scratch + T36 * C * OC, *dM = V + T36 * C * TT * G;
    for (size_t n0 = 0; n0 < N; n0 += G) {
        const size_t gn = N - n0 < G ? N - n0 : G, ld = gn * TT;
        for (size_t j = 0; j < gn; j++) {
            transform_input(V + j * TT, ld, C, inp + (n0 + j) * C * HW, H, W);
            transform_dout(dM + j * TT, ld, OC, dout + (n0 + j) * OC * HW, H, W);
        }
        const float beta = n0 == 0 ? 0.0f : 1.0f;
        for (size_t xi = 0; xi < T36; xi++)
            fed_gemm(false, true, OC, C, ld, 1.0f, dM + xi * OC * ld, ld, V + xi * C * ld, ld, beta,
                     dU + xi * OC * C, C);
    }
    const size_t XS = OC * C;
    for (size_t k = 0; k < OC * C; k++) {
        float u[36], t[6 * 5], r[5];
        for (size_t xi = 0; xi < T36; xi++) u[xi] = dU[xi * XS + k];
        for (size_t b = 0; b < 6; b++) { /* t[b][i] = (G^T u[:, b])[i] */
            gt6(r, u + b, 6);
            for (size_t i = 0; i < 5; i++) t[b * 5 + i] = r[i];
        }
        float *d = dw + k * 25;
        for (size_t i = 0; i < 5; i++) { /* row i of G^T u G = G^T applied to t[:, i] */
            gt6(r, t + i, 5);
            for (size_t j = 0; j < 5; j++) d[i * 5 + j] += r[j];
        }
    }
}
