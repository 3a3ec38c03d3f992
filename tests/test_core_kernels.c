/* Tests of the numeric kernels against their naive references and against numbers
 * worked out by hand: gemm and axpy against fed_gemm_ref and fed_axpy_ref, linear and
 * conv2d against their _ref twins over many geometries, the backward contract of
 * kernels.h (dinp overwritten, dw/db accumulated, NULL gradients skipped), the
 * adjointness of im2col and col2im, conv geometry, and pooling by hand. Finite-difference
 * checks of every backward live in test_core_gradcheck.c. */
#include "core/blas.h"
#include "core/kernels.h"
#include "core/rng.h"
#include "tests/test.h"

#include <stdint.h>
#include <stdlib.h>

/* Relative tolerance between a BLAS-backed kernel and its reference. */
#define REL_TOL 1e-4

static float *alloc_floats(size_t n) {
    float *p = malloc((n ? n : 1) * sizeof(float));
    if (!p) abort();
    return p;
}

static void fill_uniform(float *x, size_t n, fed_rng *r, float lo, float hi) {
    for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * fed_rng_uniform(r);
}

static float *random_floats(size_t n, fed_rng *r) {
    float *p = alloc_floats(n);
    fill_uniform(p, n, r, -1.0f, 1.0f);
    return p;
}

static float *filled(size_t n, float v) {
    float *p = alloc_floats(n);
    for (size_t i = 0; i < n; i++) p[i] = v;
    return p;
}

static float *copy_of(const float *x, size_t n) {
    float *p = alloc_floats(n);
    memcpy(p, x, n * sizeof(float));
    return p;
}

/* 1 when |got - want| <= tol * max(1, |want|) everywhere (NaN never passes); otherwise
 * prints the worst element under the label and returns 0. */
static int close_all(const char *what, const float *got, const float *want, size_t n, double tol) {
    double worst = 0.0;
    size_t at = 0;
    int nan = 0;
    for (size_t i = 0; i < n; i++) {
        double g = (double)got[i], w = (double)want[i];
        if (isnan(g) || isnan(w)) {
            if (!nan) at = i;
            nan = 1;
            continue;
        }
        double e = fabs(g - w) / fmax(1.0, fabs(w));
        if (e > worst) {
            worst = e;
            if (!nan) at = i;
        }
    }
    if (!nan && worst <= tol) return 1;
    fprintf(stderr, "  %s: element %zu of %zu: got %.9g, want %.9g (rel err %.3g%s)\n", what, at, n,
            (double)got[at], (double)want[at], worst, nan ? ", NaN present" : "");
    return 0;
}

/* Exact equality, element by element, for hand-computed results. */
static int same(const float *got, const float *want, size_t n) {
    return close_all("exact", got, want, n, 0.0);
}

/* <a, b> in double. */
static double dot(const float *a, const float *b, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * (double)b[i];
    return s;
}

/* ---- blas --------------------------------------------------------------------------- */

TEST(gemm_matches_reference) {
    static const size_t sizes[][3] = {{1, 1, 1},   {1, 7, 3},    {5, 1, 4},    {3, 4, 1},
                                      {17, 13, 9}, {32, 33, 31}, {64, 8, 100}, {2, 65, 3}};
    static const float alphas[] = {1.0f, -0.5f};
    static const float betas[] = {0.0f, 1.0f, 0.75f};
    fed_rng r;
    fed_rng_seed(&r, 1);
    int configs = 0, bad = 0;
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        const size_t M = sizes[s][0], N = sizes[s][1], K = sizes[s][2];
        for (int t = 0; t < 4; t++) {
            const bool ta = t & 1, tb = (t >> 1) & 1;
            /* Row strides wider than the rows, so lda/ldb/ldc matter. */
            const size_t pad = s % 2 ? 3 : 0;
            const size_t arows = ta ? K : M, acols = ta ? M : K;
            const size_t brows = tb ? N : K, bcols = tb ? K : N;
            const size_t lda = acols + pad, ldb = bcols + pad, ldc = N + 2;
            float *A = random_floats(arows * lda, &r), *B = random_floats(brows * ldb, &r);
            for (size_t a = 0; a < 2; a++) {
                for (size_t b = 0; b < 3; b++) {
                    const float alpha = alphas[a], beta = betas[b];
                    float *C = random_floats(M * ldc, &r);
                    for (size_t i = 0; i < M; i++) {
                        C[i * ldc + N] = 42.0f; /* beyond the row: never touched */
                        C[i * ldc + N + 1] = -42.0f;
                        /* beta = 0 means C is not read: NaN there must not leak. */
                        if (beta == 0.0f)
                            for (size_t j = 0; j < N; j++) C[i * ldc + j] = NAN;
                    }
                    float *Cref = copy_of(C, M * ldc);
                    fed_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
                    fed_gemm_ref(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, Cref, ldc);
                    char what[96];
                    snprintf(what, sizeof what, "gemm M=%zu N=%zu K=%zu ta=%d tb=%d a=%g b=%g", M,
                             N, K, ta, tb, (double)alpha, (double)beta);
                    configs++;
                    if (!close_all(what, C, Cref, M * ldc, REL_TOL)) bad++;
                    int untouched = 1;
                    for (size_t i = 0; i < M; i++)
                        untouched &= C[i * ldc + N] == 42.0f && C[i * ldc + N + 1] == -42.0f;
                    CHECK(untouched);
                    free(C);
                    free(Cref);
                }
            }
            free(A);
            free(B);
        }
    }
    CHECK_INT(bad, 0);
    CHECK_INT(configs, 8 * 4 * 2 * 3);
}

TEST(gemm_hand_computed) {
    /* [1 2; 3 4] @ [5 6; 7 8] = [19 22; 43 50]; A^T @ B = [26 30; 38 44]. */
    const float A[4] = {1, 2, 3, 4}, B[4] = {5, 6, 7, 8};
    float C[4] = {1, 1, 1, 1};
    fed_gemm(false, false, 2, 2, 2, 1.0f, A, 2, B, 2, 0.0f, C, 2);
    CHECK(C[0] == 19.0f && C[1] == 22.0f && C[2] == 43.0f && C[3] == 50.0f);
    fed_gemm(true, false, 2, 2, 2, 1.0f, A, 2, B, 2, 0.0f, C, 2);
    CHECK(C[0] == 26.0f && C[1] == 30.0f && C[2] == 38.0f && C[3] == 44.0f);
    /* A @ B^T = [17 23; 39 53], then 2 * that + 0.5 * C. */
    fed_gemm(false, true, 2, 2, 2, 2.0f, A, 2, B, 2, 0.5f, C, 2);
    CHECK(C[0] == 47.0f && C[1] == 61.0f && C[2] == 97.0f && C[3] == 128.0f);
    float Cr[4] = {26, 30, 38, 44};
    fed_gemm_ref(false, true, 2, 2, 2, 2.0f, A, 2, B, 2, 0.5f, Cr, 2);
    CHECK(same(C, Cr, sizeof C / sizeof C[0]));
    /* M = 0 or N = 0: nothing to do, nothing written. */
    float keep[4] = {9, 9, 9, 9};
    fed_gemm(false, false, 0, 2, 2, 1.0f, A, 2, B, 2, 0.0f, keep, 2);
    fed_gemm(false, false, 2, 0, 2, 1.0f, A, 2, B, 2, 0.0f, keep, 2);
    CHECK(keep[0] == 9.0f && keep[3] == 9.0f);
}

TEST(axpy_matches_reference) {
    static const size_t ns[] = {0, 1, 2, 7, 31, 1000, 4097};
    static const float as[] = {0.0f, 1.0f, -2.5f, 1e-3f};
    fed_rng r;
    fed_rng_seed(&r, 2);
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
        for (size_t j = 0; j < sizeof as / sizeof as[0]; j++) {
            const size_t n = ns[i];
            float *x = random_floats(n + 1, &r), *y = random_floats(n + 1, &r);
            float *y0 = copy_of(y, n + 1), *yref = copy_of(y, n + 1);
            fed_axpy(n, as[j], x, y);
            fed_axpy_ref(n, as[j], x, yref);
            char what[64];
            snprintf(what, sizeof what, "axpy n=%zu a=%g", n, (double)as[j]);
            CHECK(close_all(what, y, yref, n, 1e-6));
            CHECK(y[n] == y0[n]); /* one past the end: untouched */
            if (as[j] == 0.0f) CHECK(close_all("axpy a=0 leaves y", y, y0, n + 1, 0.0));
            free(x);
            free(y);
            free(y0);
            free(yref);
        }
    }
    float x[3] = {1, 2, 3}, y[3] = {10, 20, 30};
    fed_axpy(3, 2.0f, x, y);
    CHECK(y[0] == 12.0f && y[1] == 24.0f && y[2] == 36.0f);
}

/* ---- linear ------------------------------------------------------------------------- */

TEST(linear_matches_reference) {
    static const size_t shapes[][3] = {{1, 1, 1},   {1, 5, 3},   {4, 1, 6},   {3, 7, 1},
                                       {17, 33, 9}, {8, 64, 32}, {5, 3, 130}, {2, 257, 2}};
    fed_rng r;
    fed_rng_seed(&r, 3);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const size_t N = shapes[s][0], C = shapes[s][1], OC = shapes[s][2];
        float *x = random_floats(N * C, &r), *w = random_floats(OC * C, &r);
        float *b = random_floats(OC, &r), *dout = random_floats(N * OC, &r);
        char what[80];
        for (int with_bias = 0; with_bias < 2; with_bias++) {
            const float *bias = with_bias ? b : NULL;
            float *out = filled(N * OC, NAN), *ref = filled(N * OC, NAN);
            fed_linear_forward(out, x, w, bias, N, C, OC);
            fed_linear_forward_ref(ref, x, w, bias, N, C, OC);
            snprintf(what, sizeof what, "linear fwd N=%zu C=%zu OC=%zu bias=%d", N, C, OC,
                     with_bias);
            CHECK(close_all(what, out, ref, N * OC, REL_TOL));
            free(out);
            free(ref);
        }
        /* Backward: dinp prefilled with NaN (must be overwritten), dw/db with known values
         * (must be added to). */
        float *dw0 = random_floats(OC * C, &r), *db0 = random_floats(OC, &r);
        float *dx = filled(N * C, NAN), *dxr = filled(N * C, NAN);
        float *dw = copy_of(dw0, OC * C), *dwr = copy_of(dw0, OC * C);
        float *db = copy_of(db0, OC), *dbr = copy_of(db0, OC);
        fed_linear_backward(dx, dw, db, dout, x, w, N, C, OC);
        fed_linear_backward_ref(dxr, dwr, dbr, dout, x, w, N, C, OC);
        snprintf(what, sizeof what, "linear dinp N=%zu C=%zu OC=%zu", N, C, OC);
        CHECK(close_all(what, dx, dxr, N * C, REL_TOL));
        snprintf(what, sizeof what, "linear dw N=%zu C=%zu OC=%zu", N, C, OC);
        CHECK(close_all(what, dw, dwr, OC * C, REL_TOL));
        snprintf(what, sizeof what, "linear db N=%zu C=%zu OC=%zu", N, C, OC);
        CHECK(close_all(what, db, dbr, OC, REL_TOL));

        /* The accumulated part is exactly the gradient computed from zero. */
        float *gw = filled(OC * C, 0.0f), *gb = filled(OC, 0.0f);
        fed_linear_backward_ref(NULL, gw, gb, dout, x, w, N, C, OC);
        for (size_t i = 0; i < OC * C; i++) gw[i] += dw0[i];
        for (size_t i = 0; i < OC; i++) gb[i] += db0[i];
        CHECK(close_all("linear dw accumulates", dw, gw, OC * C, REL_TOL));
        CHECK(close_all("linear db accumulates", db, gb, OC, REL_TOL));
        free(dw0);
        free(db0);
        free(dx);
        free(dxr);
        free(dw);
        free(dwr);
        free(db);
        free(dbr);
        free(gw);
        free(gb);
        free(x);
        free(w);
        free(b);
        free(dout);
    }
}

/* Each gradient pointer may be NULL on its own; the others come out the same. */
TEST(linear_backward_null_gradients_are_skipped) {
    const size_t N = 3, C = 5, OC = 4;
    fed_rng r;
    fed_rng_seed(&r, 4);
    float *x = random_floats(N * C, &r), *w = random_floats(OC * C, &r);
    float *dout = random_floats(N * OC, &r);
    float *dx = filled(N * C, 0), *dw = filled(OC * C, 0), *db = filled(OC, 0);
    fed_linear_backward(dx, dw, db, dout, x, w, N, C, OC);
    for (int mask = 0; mask < 8; mask++) {
        float *dx2 = filled(N * C, 0), *dw2 = filled(OC * C, 0), *db2 = filled(OC, 0);
        fed_linear_backward(mask & 1 ? dx2 : NULL, mask & 2 ? dw2 : NULL, mask & 4 ? db2 : NULL,
                            dout, x, w, N, C, OC);
        float *dx3 = filled(N * C, 0), *dw3 = filled(OC * C, 0), *db3 = filled(OC, 0);
        fed_linear_backward_ref(mask & 1 ? dx3 : NULL, mask & 2 ? dw3 : NULL, mask & 4 ? db3 : NULL,
                                dout, x, w, N, C, OC);
        float *z = filled(N * C + OC * C, 0.0f);
        CHECK(close_all("dinp", dx2, mask & 1 ? dx : z, N * C, REL_TOL));
        CHECK(close_all("dw", dw2, mask & 2 ? dw : z, OC * C, REL_TOL));
        CHECK(close_all("db", db2, mask & 4 ? db : z, OC, REL_TOL));
        CHECK(close_all("ref dinp", dx3, mask & 1 ? dx : z, N * C, REL_TOL));
        CHECK(close_all("ref dw", dw3, mask & 2 ? dw : z, OC * C, REL_TOL));
        CHECK(close_all("ref db", db3, mask & 4 ? db : z, OC, REL_TOL));
        free(dx2);
        free(dw2);
        free(db2);
        free(dx3);
        free(dw3);
        free(db3);
        free(z);
    }
    free(x);
    free(w);
    free(dout);
    free(dx);
    free(dw);
    free(db);
}

/* Backward over a batch equals backward over its two halves, accumulated. */
TEST(linear_gradients_sum_over_micro_batches) {
    const size_t N = 6, C = 7, OC = 3, H = 2;
    fed_rng r;
    fed_rng_seed(&r, 5);
    float *x = random_floats(N * C, &r), *w = random_floats(OC * C, &r);
    float *dout = random_floats(N * OC, &r);
    float *dw = filled(OC * C, 0), *db = filled(OC, 0);
    float *dw2 = filled(OC * C, 0), *db2 = filled(OC, 0);
    fed_linear_backward(NULL, dw, db, dout, x, w, N, C, OC);
    fed_linear_backward(NULL, dw2, db2, dout, x, w, H, C, OC);
    fed_linear_backward(NULL, dw2, db2, dout + H * OC, x + H * C, w, N - H, C, OC);
    CHECK(close_all("dw", dw2, dw, OC * C, 1e-5));
    CHECK(close_all("db", db2, db, OC, 1e-5));
    free(x);
    free(w);
    free(dout);
    free(dw);
    free(db);
    free(dw2);
    free(db2);
}

TEST(linear_hand_computed) {
    /* x = [1 2], w = [[1 0] [0 1] [1 1]], b = [0.5 0 -1] -> [1.5 2 2]. */
    const float x[2] = {1, 2}, w[6] = {1, 0, 0, 1, 1, 1}, b[3] = {0.5f, 0, -1};
    float out[3];
    fed_linear_forward(out, x, w, b, 1, 2, 3);
    CHECK(out[0] == 1.5f && out[1] == 2.0f && out[2] == 2.0f);
    /* dout = [1 2 3]: dinp = dout @ w = [4 5], dw = dout^T x, db = dout. */
    const float dout[3] = {1, 2, 3};
    float dx[2], dw[6] = {0}, db[3] = {10, 10, 10};
    fed_linear_backward(dx, dw, db, dout, x, w, 1, 2, 3);
    CHECK(dx[0] == 4.0f && dx[1] == 5.0f);
    CHECK(dw[0] == 1.0f && dw[1] == 2.0f && dw[4] == 3.0f && dw[5] == 6.0f);
    CHECK(db[0] == 11.0f && db[1] == 12.0f && db[2] == 13.0f);
}

/* ---- conv2d ------------------------------------------------------------------------- */

typedef struct conv_case {
    size_t N, C, H, W, OC, K, S, P;
} conv_case;

/* Many geometries: ones everywhere, K = 1, stride 2 and 3 (stride > K skips pixels),
 * padding 1 and 2 (padding >= K gives all-zero windows), H != W, odd sizes, K == H. */
static const conv_case conv_cases[] = {
    {1, 1, 3, 3, 1, 1, 1, 0},
    {1, 1, 5, 5, 1, 3, 1, 1},
    {2, 3, 7, 5, 4, 3, 2, 1},
    {1, 2, 6, 9, 3, 2, 2, 2},
    {3, 1, 8, 8, 1, 5, 1, 2},
    {2, 4, 5, 7, 2, 1, 1, 0},
    {1, 3, 4, 4, 5, 4, 1, 0},
    {2, 2, 9, 6, 3, 3, 3, 1},
    {1, 1, 1, 1, 2, 1, 1, 2},
    {1, 2, 3, 5, 2, 3, 2, 2},
    {2, 3, 11, 13, 2, 5, 2, 1},
    {1, 1, 2, 7, 1, 2, 1, 0},
    {1, 2, 9, 9, 2, 2, 3, 0},
    {1, 1, 6, 4, 1, 3, 2, 0},
    {3, 5, 4, 3, 1, 1, 2, 1},
    {1, 1, 1, 6, 3, 1, 1, 0},
    /* stride 1 with OW == W (the contiguous im2col path), one with H, W < pad */
    {2, 3, 6, 5, 2, 3, 1, 1},
    {2, 2, 1, 1, 2, 5, 1, 2},
    {1, 1, 2, 3, 2, 5, 1, 2},
    {3, 2, 7, 4, 3, 5, 1, 2},
};
#define NCONV (sizeof conv_cases / sizeof conv_cases[0])

static int conv_geom(fed_conv_geom *g, const conv_case *c) {
    return fed_conv_geom_init(g, c->C, c->H, c->W, c->OC, c->K, c->S, c->P);
}

TEST(conv2d_matches_reference) {
    fed_rng r;
    fed_rng_seed(&r, 6);
    for (size_t t = 0; t < NCONV; t++) {
        const conv_case *c = &conv_cases[t];
        fed_conv_geom g;
        CHECK(conv_geom(&g, c));
        const size_t N = c->N, nin = N * c->C * c->H * c->W, nout = N * c->OC * g.OH * g.OW;
        const size_t nw = c->OC * c->C * c->K * c->K;
        float *x = random_floats(nin, &r), *w = random_floats(nw, &r);
        float *b = random_floats(c->OC, &r), *dout = random_floats(nout, &r);
        float *col = filled(fed_conv_col_size(&g), NAN); /* scratch: contents irrelevant */
        char what[96];
        for (int with_bias = 0; with_bias < 2; with_bias++) {
            const float *bias = with_bias ? b : NULL;
            float *out = filled(nout, NAN), *ref = filled(nout, NAN);
            fed_conv2d_forward(out, col, x, w, bias, N, &g);
            fed_conv2d_forward_ref(ref, x, w, bias, N, &g);
            snprintf(what, sizeof what, "conv fwd case %zu bias=%d", t, with_bias);
            CHECK(close_all(what, out, ref, nout, REL_TOL));
            free(out);
            free(ref);
        }
        float *dw0 = random_floats(nw, &r), *db0 = random_floats(c->OC, &r);
        float *dx = filled(nin, NAN), *dxr = filled(nin, NAN);
        float *dw = copy_of(dw0, nw), *dwr = copy_of(dw0, nw);
        float *db = copy_of(db0, c->OC), *dbr = copy_of(db0, c->OC);
        for (size_t i = 0; i < fed_conv_col_size(&g); i++) col[i] = NAN;
        fed_conv2d_backward(dx, dw, db, col, dout, x, w, N, &g);
        fed_conv2d_backward_ref(dxr, dwr, dbr, dout, x, w, N, &g);
        snprintf(what, sizeof what, "conv dinp case %zu", t);
        CHECK(close_all(what, dx, dxr, nin, REL_TOL));
        snprintf(what, sizeof what, "conv dw case %zu", t);
        CHECK(close_all(what, dw, dwr, nw, REL_TOL));
        snprintf(what, sizeof what, "conv db case %zu", t);
        CHECK(close_all(what, db, dbr, c->OC, REL_TOL));

        /* dw/db accumulate: subtracting the prefill leaves the gradient from zero. */
        float *gw = filled(nw, 0.0f), *gb = filled(c->OC, 0.0f);
        fed_conv2d_backward_ref(NULL, gw, gb, dout, x, w, N, &g);
        for (size_t i = 0; i < nw; i++) gw[i] += dw0[i];
        for (size_t i = 0; i < c->OC; i++) gb[i] += db0[i];
        snprintf(what, sizeof what, "conv dw accumulates case %zu", t);
        CHECK(close_all(what, dw, gw, nw, REL_TOL));
        snprintf(what, sizeof what, "conv db accumulates case %zu", t);
        CHECK(close_all(what, db, gb, c->OC, REL_TOL));

        /* Each gradient alone, the others NULL. */
        float *dx1 = filled(nin, NAN), *dw1 = copy_of(dw0, nw), *db1 = copy_of(db0, c->OC);
        fed_conv2d_backward(dx1, NULL, NULL, col, dout, x, w, N, &g);
        fed_conv2d_backward(NULL, dw1, NULL, col, dout, x, w, N, &g);
        fed_conv2d_backward(NULL, NULL, db1, col, dout, x, w, N, &g);
        snprintf(what, sizeof what, "conv alone case %zu", t);
        CHECK(close_all(what, dx1, dxr, nin, REL_TOL));
        CHECK(close_all(what, dw1, dwr, nw, REL_TOL));
        CHECK(close_all(what, db1, dbr, c->OC, REL_TOL));
        float *dx2 = filled(nin, NAN), *db2 = copy_of(db0, c->OC);
        fed_conv2d_backward_ref(dx2, NULL, db2, dout, x, w, N, &g);
        CHECK(close_all(what, dx2, dxr, nin, REL_TOL));
        CHECK(close_all(what, db2, dbr, c->OC, REL_TOL));

        free(dx1);
        free(dw1);
        free(db1);
        free(dx2);
        free(db2);
        free(gw);
        free(gb);
        free(dw0);
        free(db0);
        free(dx);
        free(dxr);
        free(dw);
        free(dwr);
        free(db);
        free(dbr);
        free(col);
        free(x);
        free(w);
        free(b);
        free(dout);
    }
}

/* The grouped path (G examples per GEMM, last group short) against the naive reference
 * at every group size from 1 to past N, scratch prefilled with NaN. */
TEST(conv2d_grouped_matches_reference) {
    fed_rng r;
    fed_rng_seed(&r, 9);
    for (size_t t = 0; t < NCONV; t++) {
        const conv_case *c = &conv_cases[t];
        fed_conv_geom g;
        CHECK(conv_geom(&g, c));
        const size_t N = 5, nin = N * c->C * c->H * c->W, nout = N * c->OC * g.OH * g.OW;
        const size_t nw = c->OC * c->C * c->K * c->K;
        float *x = random_floats(nin, &r), *w = random_floats(nw, &r);
        float *b = random_floats(c->OC, &r), *dout = random_floats(nout, &r);
        float *ref = filled(nout, NAN), *dxr = filled(nin, NAN);
        float *dwr = filled(nw, 0.0f), *dbr = filled(c->OC, 0.0f);
        fed_conv2d_forward_ref(ref, x, w, b, N, &g);
        fed_conv2d_backward_ref(dxr, dwr, dbr, dout, x, w, N, &g);
        for (size_t G = 1; G <= N + 1; G++) {
            char what[96];
            float *scratch = filled(fed_conv_scratch_size(&g, G), NAN);
            float *out = filled(nout, NAN), *dx = filled(nin, NAN);
            float *dw = filled(nw, 0.0f), *db = filled(c->OC, 0.0f);
            fed_conv2d_forward_grouped(out, scratch, x, w, b, N, G, &g);
            snprintf(what, sizeof what, "grouped fwd case %zu G=%zu", t, G);
            CHECK(close_all(what, out, ref, nout, REL_TOL));
            fed_conv2d_backward_grouped(dx, dw, db, scratch, dout, x, w, N, G, &g);
            snprintf(what, sizeof what, "grouped dinp/dw/db case %zu G=%zu", t, G);
            CHECK(close_all(what, dx, dxr, nin, REL_TOL));
            CHECK(close_all(what, dw, dwr, nw, REL_TOL));
            CHECK(close_all(what, db, dbr, c->OC, REL_TOL));
            /* db alone, and dinp alone (no db): the gather still feeds the GEMM. */
            float *db1 = filled(c->OC, 0.0f), *dx1 = filled(nin, NAN);
            fed_conv2d_backward_grouped(NULL, NULL, db1, scratch, dout, x, w, N, G, &g);
            fed_conv2d_backward_grouped(dx1, NULL, NULL, scratch, dout, x, w, N, G, &g);
            CHECK(close_all(what, db1, dbr, c->OC, REL_TOL));
            CHECK(close_all(what, dx1, dxr, nin, REL_TOL));
            free(db1);
            free(dx1);
            free(scratch);
            free(out);
            free(dx);
            free(dw);
            free(db);
        }
        free(x);
        free(w);
        free(b);
        free(dout);
        free(ref);
        free(dxr);
        free(dwr);
        free(dbr);
    }
}

TEST(conv_group_sizes) {
    /* The FedAvg CNN: conv1 (1x28x28 -> 32, K=5, pad 2) holds (25 + 32) * 784 = 44 688
     * floats per example, so 5 fit in 2^18; 64 examples run as 13 groups of 5 (the
     * last of 4). conv2 (32x14x14 -> 64) needs (800 + 64) * 196 = 169 344: one. */
    fed_conv_geom g1, g2;
    CHECK(fed_conv_geom_init(&g1, 1, 28, 28, 32, 5, 1, 2));
    CHECK(fed_conv_geom_init(&g2, 32, 14, 14, 64, 5, 1, 2));
    CHECK_SIZE(fed_conv_group(&g1, 64), 5);
    CHECK_SIZE(fed_conv_group(&g1, 10), 5);
    CHECK_SIZE(fed_conv_group(&g1, 4), 4);
    CHECK_SIZE(fed_conv_group(&g1, 1), 1);
    CHECK_SIZE(fed_conv_group(&g1, 0), 1);
    CHECK_SIZE(fed_conv_group(&g2, 64), 1);
    CHECK_SIZE(fed_conv_scratch_size(&g1, 1), 25 * 784);
    CHECK_SIZE(fed_conv_scratch_size(&g1, 5), (25 + 32) * 784 * 5);
    CHECK_SIZE(fed_conv_scratch_size(&g2, 1), 800 * 196);
}

TEST(conv2d_gradients_sum_over_micro_batches) {
    const size_t N = 3;
    fed_conv_geom g;
    CHECK(fed_conv_geom_init(&g, 2, 5, 6, 3, 3, 2, 1));
    const size_t img = 2 * 5 * 6, oimg = 3 * g.OH * g.OW, nw = 3 * 2 * 9;
    fed_rng r;
    fed_rng_seed(&r, 7);
    float *x = random_floats(N * img, &r), *w = random_floats(nw, &r);
    float *dout = random_floats(N * oimg, &r), *col = alloc_floats(fed_conv_col_size(&g));
    float *dw = filled(nw, 0), *db = filled(3, 0), *dw2 = filled(nw, 0), *db2 = filled(3, 0);
    fed_conv2d_backward(NULL, dw, db, col, dout, x, w, N, &g);
    for (size_t n = 0; n < N; n++)
        fed_conv2d_backward(NULL, dw2, db2, col, dout + n * oimg, x + n * img, w, 1, &g);
    CHECK(close_all("conv dw", dw2, dw, nw, 1e-5));
    CHECK(close_all("conv db", db2, db, 3, 1e-5));
    free(x);
    free(w);
    free(dout);
    free(col);
    free(dw);
    free(db);
    free(dw2);
    free(db2);
}

TEST(conv2d_hand_computed) {
    /* 3x3 input 1..9, 2x2 kernel of ones: window sums [12 16; 24 28]. */
    const float x[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, ones[4] = {1, 1, 1, 1}, bias[1] = {1};
    fed_conv_geom g;
    CHECK(fed_conv_geom_init(&g, 1, 3, 3, 1, 2, 1, 0));
    CHECK_SIZE(g.OH, 2);
    CHECK_SIZE(g.OW, 2);
    float col[16], out[4], ref[4];
    fed_conv2d_forward(out, col, x, ones, NULL, 1, &g);
    CHECK(out[0] == 12.0f && out[1] == 16.0f && out[2] == 24.0f && out[3] == 28.0f);
    fed_conv2d_forward_ref(ref, x, ones, NULL, 1, &g);
    CHECK(same(out, ref, sizeof out / sizeof out[0]));
    fed_conv2d_forward(out, col, x, ones, bias, 1, &g);
    CHECK(out[0] == 13.0f && out[1] == 17.0f && out[2] == 25.0f && out[3] == 29.0f);

    /* dout all ones: dinp counts the windows over each pixel, dw sums each shifted
     * view (the same four window sums), db counts the outputs (added to 0.5). */
    const float dout[4] = {1, 1, 1, 1};
    float dx[9], dw[4] = {0}, db[1] = {0.5f};
    fed_conv2d_backward(dx, dw, db, col, dout, x, ones, 1, &g);
    const float want_dx[9] = {1, 2, 1, 2, 4, 2, 1, 2, 1};
    CHECK(same(dx, want_dx, sizeof dx / sizeof dx[0]));
    CHECK(dw[0] == 12.0f && dw[1] == 16.0f && dw[2] == 24.0f && dw[3] == 28.0f);
    CHECK(db[0] == 4.5f);

    /* Padding 1, stride 2: windows at padded (0,0), (0,2), (2,0), (2,2) see 1; 2+3;
     * 4+7; 5+6+8+9. */
    CHECK(fed_conv_geom_init(&g, 1, 3, 3, 1, 2, 2, 1));
    CHECK_SIZE(g.OH, 2);
    CHECK_SIZE(g.OW, 2);
    fed_conv2d_forward(out, col, x, ones, NULL, 1, &g);
    CHECK(out[0] == 1.0f && out[1] == 5.0f && out[2] == 11.0f && out[3] == 28.0f);
    fed_conv2d_forward_ref(ref, x, ones, NULL, 1, &g);
    CHECK(same(out, ref, sizeof out / sizeof out[0]));

    /* Two input channels, two output channels, 1x1 kernel: a per-pixel matrix product
     * [[1 2] [-1 0]] over channels (1..4) and (10..40). */
    const float x2[8] = {1, 2, 3, 4, 10, 20, 30, 40}, w2[4] = {1, 2, -1, 0};
    float out2[8], col2[8];
    CHECK(fed_conv_geom_init(&g, 2, 2, 2, 2, 1, 1, 0));
    fed_conv2d_forward(out2, col2, x2, w2, NULL, 1, &g);
    const float want2[8] = {21, 42, 63, 84, -1, -2, -3, -4};
    CHECK(same(out2, want2, sizeof out2 / sizeof out2[0]));
}

TEST(conv_geom_init) {
    fed_conv_geom g;
    /* Impossible geometries: zero sizes or stride, window larger than the padded input. */
    CHECK_INT(fed_conv_geom_init(&g, 0, 5, 5, 1, 3, 1, 0), 0);
    CHECK_INT(fed_conv_geom_init(&g, 1, 0, 5, 1, 3, 1, 0), 0);
    CHECK_INT(fed_conv_geom_init(&g, 1, 5, 0, 1, 3, 1, 0), 0);
    CHECK_INT(fed_conv_geom_init(&g, 1, 5, 5, 0, 3, 1, 0), 0);
    CHECK_INT(fed_conv_geom_init(&g, 1, 5, 5, 1, 0, 1, 0), 0);
    CHECK_INT(fed_conv_geom_init(&g, 1, 5, 5, 1, 3, 0, 0), 0);
    CHECK_INT(fed_conv_geom_init(&g, 1, 3, 5, 1, 4, 1, 0), 0); /* too short */
    CHECK_INT(fed_conv_geom_init(&g, 1, 5, 2, 1, 3, 1, 0), 0); /* too narrow */
    CHECK_INT(fed_conv_geom_init(&g, 1, 4, 4, 1, 7, 1, 1), 0); /* 4 + 2 < 7 */
    CHECK_INT(fed_conv_geom_init(&g, 1, 4, 1, 1, 4, 1, 1), 0); /* 1 + 2 < 4 */

    /* OH = (H + 2P - K) / S + 1, the same for W. */
    CHECK_INT(fed_conv_geom_init(&g, 1, 28, 28, 32, 5, 1, 2), 1);
    CHECK(g.OH == 28 && g.OW == 28 && g.C == 1 && g.OC == 32 && g.K == 5);
    CHECK_SIZE(fed_conv_col_size(&g), 25 * 28 * 28);
    CHECK_INT(fed_conv_geom_init(&g, 3, 7, 5, 4, 3, 2, 1), 1);
    CHECK(g.OH == 4 && g.OW == 3 && g.stride == 2 && g.pad == 1);
    CHECK_SIZE(fed_conv_col_size(&g), 3 * 9 * 4 * 3);
    CHECK_INT(fed_conv_geom_init(&g, 2, 32, 17, 1, 4, 3, 0), 1);
    CHECK(g.OH == 10 && g.OW == 5);
    CHECK_INT(fed_conv_geom_init(&g, 1, 1, 1, 1, 1, 1, 2), 1);
    CHECK(g.OH == 5 && g.OW == 5);
    CHECK_INT(fed_conv_geom_init(&g, 1, 10, 10, 1, 3, 4, 0), 1);
    CHECK(g.OH == 2 && g.OW == 2);
    CHECK_INT(fed_conv_geom_init(&g, 1, 2, 2, 1, 4, 1, 1), 1); /* window == padded input */
    CHECK(g.OH == 1 && g.OW == 1);
    CHECK_INT(fed_conv_geom_init(&g, 1, 4, 1, 1, 3, 1, 1), 1);
    CHECK(g.OH == 4 && g.OW == 1);
    CHECK_INT(fed_conv_geom_init(&g, 1, 9, 6, 1, 3, 2, 0), 1);
    CHECK(g.OH == 4 && g.OW == 2);
}

/* <im2col(x), y> == <x, col2im(y)> for random x, y: col2im is the adjoint. Also: im2col
 * writes every entry (padding as zeros), and col2im adds to what is there. */
TEST(im2col_col2im_adjoint) {
    fed_rng r;
    fed_rng_seed(&r, 8);
    for (size_t t = 0; t < NCONV; t++) {
        const conv_case *c = &conv_cases[t];
        fed_conv_geom g;
        CHECK(conv_geom(&g, c));
        const size_t nimg = c->C * c->H * c->W, ncol = fed_conv_col_size(&g);
        float *x = random_floats(nimg, &r), *y = random_floats(ncol, &r);
        float *col = filled(ncol, NAN), *img = filled(nimg, 0.0f);
        fed_im2col(col, x, &g);
        int finite = 1;
        for (size_t i = 0; i < ncol; i++) finite &= !isnan(col[i]);
        CHECK(finite);
        fed_col2im(img, y, &g);
        double lhs = dot(col, y, ncol), rhs = dot(x, img, nimg);
        CHECK_NEAR(lhs, rhs, 1e-5 * fmax(1.0, fabs(lhs)));

        /* Accumulates: col2im onto a prefilled image adds the same amounts. */
        float *base = random_floats(nimg, &r), *acc = copy_of(base, nimg);
        fed_col2im(acc, y, &g);
        for (size_t i = 0; i < nimg; i++) base[i] += img[i];
        CHECK(close_all("col2im accumulates", acc, base, nimg, 1e-6));
        free(x);
        free(y);
        free(col);
        free(img);
        free(base);
        free(acc);
    }
    /* Hand check: 1x3x3, K=2, pad 1, stride 2; the column of kernel offset (1,1) reads
     * padded (1,1), (1,3), (3,1), (3,3) = input (0,0), (0,2), (2,0), (2,2). */
    const float x[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    fed_conv_geom g;
    CHECK(fed_conv_geom_init(&g, 1, 3, 3, 1, 2, 2, 1));
    float col[16];
    fed_im2col(col, x, &g);
    const float want[16] = {0, 0, 0, 5, 0, 0, 4, 6, 0, 2, 0, 8, 1, 3, 7, 9};
    CHECK(same(col, want, sizeof col / sizeof col[0]));
}

/* ---- pooling ------------------------------------------------------------------------ */

/* A 4x4 plane with distinct values:
 *    1  5  2  0
 *    3  4  8  7
 *    9  6 -1 -2
 *    0 10 11 -3 */
static const float plane4[16] = {1, 5, 2, 0, 3, 4, 8, 7, 9, 6, -1, -2, 0, 10, 11, -3};

TEST(maxpool_hand_computed) {
    float out[9], dx[16];
    int32_t am[9];
    /* K=2, S=2: maxima 5, 8, 10, 11 at flat indices 1, 6, 13, 14. */
    fed_maxpool2d_forward(out, am, plane4, 1, 1, 4, 4, 2, 2);
    CHECK(out[0] == 5.0f && out[1] == 8.0f && out[2] == 10.0f && out[3] == 11.0f);
    CHECK(am[0] == 1 && am[1] == 6 && am[2] == 13 && am[3] == 14);
    const float dout[4] = {1, 2, 3, 4};
    for (size_t i = 0; i < 16; i++) dx[i] = NAN;
    fed_maxpool2d_backward(dx, dout, am, 1, 1, 4, 4, 2, 2);
    const float want_dx[16] = {0, 1, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 3, 4, 0};
    CHECK(same(dx, want_dx, sizeof dx / sizeof dx[0]));

    /* K=2, S=1, overlapping windows: 5 8 8 / 9 8 8 / 10 11 11; a shared maximum
     * collects the gradient of every window it wins. */
    fed_maxpool2d_forward(out, am, plane4, 1, 1, 4, 4, 2, 1);
    const float want_out[9] = {5, 8, 8, 9, 8, 8, 10, 11, 11};
    const int32_t want_am[9] = {1, 6, 6, 8, 6, 6, 13, 14, 14};
    CHECK(same(out, want_out, sizeof out / sizeof out[0]));
    CHECK_MEM(am, want_am, sizeof am);
    const float ones[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    fed_maxpool2d_backward(dx, ones, am, 1, 1, 4, 4, 2, 1);
    const float want_dx1[16] = {0, 1, 0, 0, 0, 0, 4, 0, 1, 0, 0, 0, 0, 1, 2, 0};
    CHECK(same(dx, want_dx1, sizeof dx / sizeof dx[0]));

    /* K=3, S=1: 9 8 / 11 11 (the window at (0,1) holds 5 2 0 / 4 8 7 / 6 -1 -2). */
    fed_maxpool2d_forward(out, am, plane4, 1, 1, 4, 4, 3, 1);
    CHECK(out[0] == 9.0f && out[1] == 8.0f && out[2] == 11.0f && out[3] == 11.0f);
    CHECK(am[0] == 8 && am[1] == 6 && am[2] == 14 && am[3] == 14);

    /* Non-square 2x5 input, K=2, S=2 (the last column is left out); two planes (N=2)
     * whose argmax indices are per plane. */
    const float x2[20] = {0, 3, 1, 2, 9, 4, -1, 0, 7, 9,  /* plane 0 */
                          5, 4, 6, 1, 0, 0, 1,  2, 8, 0}; /* plane 1 */
    float o2[4];
    int32_t a2[4];
    fed_maxpool2d_forward(o2, a2, x2, 2, 1, 2, 5, 2, 2);
    CHECK(o2[0] == 4.0f && o2[1] == 7.0f && o2[2] == 5.0f && o2[3] == 8.0f);
    CHECK(a2[0] == 5 && a2[1] == 8 && a2[2] == 0 && a2[3] == 8);
}

/* K = S = 2 (the FedAvg CNN's pooling) against the window loop written out here, on odd
 * sizes (the last row/column left out) and values with many ties (first maximum wins). */
TEST(maxpool2x2_matches_window_loop) {
    const size_t P = 3, H = 7, W = 9, OH = 3, OW = 4;
    float x[3 * 7 * 9], out[3 * 3 * 4];
    int32_t am[3 * 3 * 4];
    for (size_t i = 0; i < P * H * W; i++) x[i] = (float)(((i * 2654435761u) >> 13) % 3) - 1.0f;
    fed_maxpool2d_forward(out, am, x, 1, P, H, W, 2, 2);
    int bad = 0;
    for (size_t p = 0; p < P; p++) {
        for (size_t oh = 0; oh < OH; oh++) {
            for (size_t ow = 0; ow < OW; ow++) {
                size_t best = 2 * oh * W + 2 * ow;
                for (size_t kh = 0; kh < 2; kh++)
                    for (size_t kw = 0; kw < 2; kw++) {
                        size_t i = (2 * oh + kh) * W + 2 * ow + kw;
                        if (x[p * H * W + i] > x[p * H * W + best]) best = i;
                    }
                size_t o = (p * OH + oh) * OW + ow;
                if (am[o] != (int32_t)best || out[o] != x[p * H * W + best]) bad++;
            }
        }
    }
    CHECK_INT(bad, 0);
}

TEST(avgpool_hand_computed) {
    float out[9], dx[16];
    fed_avgpool2d_forward(out, plane4, 1, 1, 4, 4, 2, 2);
    CHECK(out[0] == 3.25f && out[1] == 4.25f && out[2] == 6.25f && out[3] == 1.25f);
    const float dout[4] = {4, 8, 12, 16};
    for (size_t i = 0; i < 16; i++) dx[i] = NAN;
    fed_avgpool2d_backward(dx, dout, 1, 1, 4, 4, 2, 2);
    const float want_dx[16] = {1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4};
    CHECK(same(dx, want_dx, sizeof dx / sizeof dx[0]));

    /* Overlapping K=2, S=1: every output is a mean of four; the gradient of an all-ones
     * dout counts windows / 4. */
    fed_avgpool2d_forward(out, plane4, 1, 1, 4, 4, 2, 1);
    CHECK(out[0] == 3.25f && out[4] == 4.25f && out[8] == 1.25f);
    const float ones[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    fed_avgpool2d_backward(dx, ones, 1, 1, 4, 4, 2, 1);
    const float want_dx1[16] = {0.25f, 0.5f, 0.5f, 0.25f, 0.5f,  1,    1,    0.5f,
                                0.5f,  1,    1,    0.5f,  0.25f, 0.5f, 0.5f, 0.25f};
    CHECK(same(dx, want_dx1, sizeof dx / sizeof dx[0]));

    /* 2x3, K=2, S=1 -> 1x2; K=3 over 3x3 -> the mean of 1..9. */
    const float x23[6] = {1, 2, 3, 5, 6, 7};
    fed_avgpool2d_forward(out, x23, 1, 1, 2, 3, 2, 1);
    CHECK(out[0] == 3.5f && out[1] == 4.5f);
    const float x33[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    fed_avgpool2d_forward(out, x33, 1, 1, 3, 3, 3, 3);
    CHECK_NEAR(out[0], 5.0, 1e-6);
}

TEST(globalavgpool_hand_computed) {
    /* N=2, C=1, HW=4: means 2.5 and 1; then N=1, C=2 gives the same. */
    const float x[8] = {1, 2, 3, 4, -1, 0, 0, 5};
    float out[2], dx[8];
    fed_globalavgpool_forward(out, x, 2, 1, 4);
    CHECK(out[0] == 2.5f && out[1] == 1.0f);
    fed_globalavgpool_forward(out, x, 1, 2, 4);
    CHECK(out[0] == 2.5f && out[1] == 1.0f);
    const float dout[2] = {2, 4};
    for (size_t i = 0; i < 8; i++) dx[i] = NAN;
    fed_globalavgpool_backward(dx, dout, 2, 1, 4);
    const float want[8] = {0.5f, 0.5f, 0.5f, 0.5f, 1, 1, 1, 1};
    CHECK(same(dx, want, sizeof dx / sizeof dx[0]));
    /* HW = 1 is the identity. */
    fed_globalavgpool_forward(out, x, 1, 2, 1);
    CHECK(out[0] == 1.0f && out[1] == 2.0f);
}

int main(void) {
    RUN(gemm_matches_reference);
    RUN(gemm_hand_computed);
    RUN(axpy_matches_reference);
    RUN(linear_matches_reference);
    RUN(linear_backward_null_gradients_are_skipped);
    RUN(linear_gradients_sum_over_micro_batches);
    RUN(linear_hand_computed);
    RUN(conv2d_matches_reference);
    RUN(conv2d_grouped_matches_reference);
    RUN(conv_group_sizes);
    RUN(conv2d_gradients_sum_over_micro_batches);
    RUN(conv2d_hand_computed);
    RUN(conv_geom_init);
    RUN(im2col_col2im_adjoint);
    RUN(maxpool_hand_computed);
    RUN(maxpool2x2_matches_window_loop);
    RUN(avgpool_hand_computed);
    RUN(globalavgpool_hand_computed);
    return test_report();
}
