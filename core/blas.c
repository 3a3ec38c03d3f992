/* OpenBLAS wrappers and their naive references. */
#include "core/blas.h"

#include <assert.h>
#include <cblas.h>
#include <limits.h>

void fed_gemm(bool trans_a, bool trans_b, size_t M, size_t N, size_t K, float alpha, const float *A,
              size_t lda, const float *B, size_t ldb, float beta, float *C, size_t ldc) {
    assert(M <= INT_MAX && N <= INT_MAX && K <= INT_MAX);
    assert(lda <= INT_MAX && ldb <= INT_MAX && ldc <= INT_MAX);
    if (M == 0 || N == 0) return;
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, (int)M, (int)N, (int)K, alpha, A, (int)lda, B,
                (int)ldb, beta, C, (int)ldc);
}

void fed_gemm_ref(bool trans_a, bool trans_b, size_t M, size_t N, size_t K, float alpha,
                  const float *A, size_t lda, const float *B, size_t ldb, float beta, float *C,
                  size_t ldc) {
    for (size_t i = 0; i < M; i++) {
        for (size_t j = 0; j < N; j++) {
            double acc = 0.0;
            for (size_t k = 0; k < K; k++) {
                float a = trans_a ? A[k * lda + i] : A[i * lda + k];
                float b = trans_b ? B[j * ldb + k] : B[k * ldb + j];
                acc += (double)a * (double)b;
            }
            float prev = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
            C[i * ldc + j] = (float)((double)alpha * acc) + prev;
        }
    }
}

/* Level-1 calls take int lengths: walk long vectors in INT_MAX-sized pieces. */
#define PIECE ((size_t)INT_MAX)

void fed_axpy(size_t n, float a, const float *x, float *y) {
    for (size_t off = 0; off < n; off += PIECE) {
        size_t len = n - off < PIECE ? n - off : PIECE;
        cblas_saxpy((int)len, a, x + off, 1, y + off, 1);
    }
}

void fed_axpy_ref(size_t n, float a, const float *x, float *y) {
    for (size_t i = 0; i < n; i++) y[i] += a * x[i];
}

void fed_scal(size_t n, float a, float *x) {
    for (size_t off = 0; off < n; off += PIECE) {
        size_t len = n - off < PIECE ? n - off : PIECE;
        cblas_sscal((int)len, a, x + off, 1);
    }
}

double fed_sumsq(size_t n, const float *x) {
    /* Eight independent double accumulators: the compiler may not reorder one chain of
     * additions, but it vectorizes eight. */
    double acc[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (size_t k = 0; k < 8; k++) acc[k] += (double)x[i + k] * (double)x[i + k];
    double s = 0.0;
    for (; i < n; i++) s += (double)x[i] * (double)x[i];
    for (size_t k = 0; k < 8; k++) s += acc[k];
    return s;
}

void fed_blas_set_threads(int n) {
    openblas_set_num_threads(n < 1 ? 1 : n);
}

int fed_blas_threads(void) {
    return openblas_get_num_threads();
}

const char *fed_blas_config(void) {
    return openblas_get_config();
}
