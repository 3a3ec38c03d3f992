/* The BLAS boundary: the only place in fedtune that includes cblas.h. Row-major
 * wrappers with size_t sizes over OpenBLAS, each with a naive reference beside it
 * (suffix _ref) that the tests compare against.
 *
 * Sizes above INT_MAX are split into pieces for the level-1 routines; gemm asserts its
 * dimensions fit an int (no layer comes near). */
#ifndef FED_BLAS_H
#define FED_BLAS_H

#include <stdbool.h>
#include <stddef.h>

/* C(M,N) = alpha * op(A)(M,K) @ op(B)(K,N) + beta * C, row-major; op(X) = X^T when
 * the trans flag is true. lda/ldb/ldc are row strides of A, B, C as stored. */
void fed_gemm(bool trans_a, bool trans_b, size_t M, size_t N, size_t K, float alpha, const float *A,
              size_t lda, const float *B, size_t ldb, float beta, float *C, size_t ldc);
void fed_gemm_ref(bool trans_a, bool trans_b, size_t M, size_t N, size_t K, float alpha,
                  const float *A, size_t lda, const float *B, size_t ldb, float beta, float *C,
                  size_t ldc);

/* y += a * x */
void fed_axpy(size_t n, float a, const float *x, float *y);
void fed_axpy_ref(size_t n, float a, const float *x, float *y);
/* x *= a */
void fed_scal(size_t n, float a, float *x);
/* sum x_i^2, accumulated in double. */
double fed_sumsq(size_t n, const float *x);

/* OpenBLAS worker threads for this process (1 = single-threaded). */
void fed_blas_set_threads(int n);
int fed_blas_threads(void);
/* OpenBLAS build description, e.g. "OpenBLAS 0.3.21 DYNAMIC_ARCH ... Haswell". */
const char *fed_blas_config(void);

#endif
