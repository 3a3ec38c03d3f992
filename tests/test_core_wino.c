/* Tests of the Winograd F(2x2, 5x5) convolution (core/kernels_wino.c): the 1-D F(2, 5)
 * against direct correlation, then the forward pass, the input gradient and the weight
 * and bias gradients against the naive references fed_conv2d_forward_ref /
 * fed_conv2d_backward_ref over geometries
 * with odd sizes, one channel, images smaller than a tile, and batches of 1 and 3 in
 * groups that leave a short last group.
 *
 * Tolerance: the error is measured against the largest reference value of the tensor
 * (|got - want| / max |want|), because Winograd spreads rounding over the whole tile:
 * the transforms multiply by up to 4 (B^T, twice: 16) and 2 (A^T) and G sums five
 * taps, so an output near zero carries the rounding of its larger neighbours. Measured
 * (seeds fixed): forward and input gradient at most 3.7e-6 (32 -> 64 channels, 14x14),
 * so WINO_TOL = 2e-5 has a margin of five; the weight gradient, a sum over every tile
 * of the batch (up to 2 x 196 here) of transformed products, at most 8.6e-6, so
 * WINO_DW_TOL = 5e-5 (six); db, a plain sum, WINO_TOL. A wrong tap of 1e-3 (last test)
 * already gives 1.5e-4, and indexing or transform bugs errors of order 1. These
 * tolerances apply to this kernel only (test_core_kernels keeps its own). */
#include "core/arch.h"
#include "core/arena.h"
#include "core/kernels.h"
#include "core/log.h"
#include "core/model.h"
#include "core/rng.h"
#include "tests/test.h"

#include <stdlib.h>

#define WINO_TOL    2e-5
#define WINO_DW_TOL 5e-5

static double worst_seen;

static float *alloc_floats(size_t n) {
    float *p = malloc((n ? n : 1) * sizeof(float));
    if (!p) abort();
    return p;
}

static float *random_floats(size_t n, fed_rng *r) {
    float *p = alloc_floats(n);
    for (size_t i = 0; i < n; i++) p[i] = -1.0f + 2.0f * fed_rng_uniform(r);
    return p;
}

static float *filled(size_t n, float v) {
    float *p = alloc_floats(n);
    for (size_t i = 0; i < n; i++) p[i] = v;
    return p;
}

/* max |got - want| / max |want| <= tol (NaN never passes); prints the error. */
static int close_scaled(const char *what, const float *got, const float *want, size_t n,
                        double tol) {
    double scale = 0.0, err = 0.0;
    for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs((double)want[i]));
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - (double)want[i]);
        if (isnan(e)) err = INFINITY;
        if (e > err) err = e;
    }
    double rel = scale > 0.0 ? err / scale : err;
    if (rel > worst_seen) worst_seen = rel;
    if (rel <= tol) return 1;
    fprintf(stderr, "  %s: max error %.3g relative to max |want| %.3g\n", what, rel, scale);
    return 0;
}

TEST(wino_1d_matches_direct_correlation) {
    fed_rng r;
    fed_rng_seed(&r, 1);
    /* Exact cases: a unit impulse picks one tap (y0 = g[k] at d[k] = 1, y1 = g[k-1]). */
    const float g[5] = {1.0f, 2.0f, 3.0f, 4.0f, 5.0f};
    for (int k = 0; k < 6; k++) {
        float d[6] = {0}, y[2];
        d[k] = 1.0f;
        fed_wino25_1d(y, d, g);
        CHECK_NEAR(y[0], k < 5 ? g[k] : 0.0f, 1e-6);
        CHECK_NEAR(y[1], k > 0 ? g[k - 1] : 0.0f, 1e-6);
    }
    for (int t = 0; t < 1000; t++) {
        float d[6], gg[5], y[2];
        for (int i = 0; i < 6; i++) d[i] = -1.0f + 2.0f * fed_rng_uniform(&r);
        for (int i = 0; i < 5; i++) gg[i] = -1.0f + 2.0f * fed_rng_uniform(&r);
        fed_wino25_1d(y, d, gg);
        for (int i = 0; i < 2; i++) {
            double want = 0.0;
            for (int k = 0; k < 5; k++) want += (double)gg[k] * (double)d[i + k];
            if (fabs((double)y[i] - want) > 5e-6) {
                CHECK_NEAR(y[i], want, 5e-6);
                return;
            }
        }
    }
    CHECK(1);
}

TEST(wino_fits_and_sizes) {
    fed_conv_geom g;
    CHECK(fed_conv_geom_init(&g, 32, 14, 14, 64, 5, 1, 2));
    CHECK_INT(fed_conv_wino_fits(&g), 1);
    /* 36 * (32 + 64) * 49 tiles = 169 344 floats per example: only one fits in 2^18. */
    CHECK_SIZE(fed_conv_wino_group(&g, 64), 1);
    CHECK_SIZE(fed_conv_wino_group(&g, 1), 1);
    CHECK_SIZE(fed_conv_wino_scratch_size(&g, 2), 36 * 32 * 64 + 36 * 96 * 49 * 2);
    /* 3 -> 2 channels, 15 x 9: 8 x 5 tiles, 36 * 5 * 40 = 7 200 floats per example, 36
     * fit: 64 examples run as two groups of 32, 10 as one. */
    CHECK(fed_conv_geom_init(&g, 3, 15, 9, 2, 5, 1, 2));
    CHECK_SIZE(fed_conv_wino_scratch_size(&g, 1), 36 * 6 + 36 * 5 * 8 * 5);
    CHECK_SIZE(fed_conv_wino_group(&g, 64), 32);
    CHECK_SIZE(fed_conv_wino_group(&g, 10), 10);
    CHECK_SIZE(fed_conv_wino_group(&g, 0), 1);
    CHECK(fed_conv_geom_init(&g, 4, 8, 8, 4, 3, 1, 1));
    CHECK_INT(fed_conv_wino_fits(&g), 0);
    CHECK(fed_conv_geom_init(&g, 4, 8, 8, 4, 5, 2, 2));
    CHECK_INT(fed_conv_wino_fits(&g), 0);
    CHECK(fed_conv_geom_init(&g, 4, 8, 8, 4, 5, 1, 1));
    CHECK_INT(fed_conv_wino_fits(&g), 0);
}

typedef struct wcase {
    size_t N, C, H, W, OC, G;
} wcase;

static const wcase cases[] = {
    {1, 1, 5, 5, 1, 1},     {3, 1, 7, 6, 4, 2},    {1, 3, 14, 14, 8, 1},
    {3, 4, 9, 11, 5, 3},    {3, 2, 1, 1, 3, 2},    {1, 5, 2, 3, 2, 1},
    {3, 32, 14, 14, 64, 2}, {2, 1, 28, 28, 32, 4}, {3, 6, 13, 4, 7, 1},
};

/* Forward (with and without bias), the input gradient and the weight and bias
 * gradients against the references;
 * scratch, outputs and dinp prefilled with NaN (every element must be written). */
TEST(wino_matches_reference) {
    fed_rng r;
    fed_rng_seed(&r, 7);
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        const wcase *c = &cases[t];
        fed_conv_geom g;
        CHECK(fed_conv_geom_init(&g, c->C, c->H, c->W, c->OC, 5, 1, 2));
        const size_t nin = c->N * c->C * c->H * c->W, nout = c->N * c->OC * c->H * c->W;
        float *x = random_floats(nin, &r), *w = random_floats(c->OC * c->C * 25, &r);
        float *b = random_floats(c->OC, &r), *dout = random_floats(nout, &r);
        float *scratch = filled(fed_conv_wino_scratch_size(&g, c->G), NAN);
        float *out = filled(nout, NAN), *ref = filled(nout, NAN);
        float *dx = filled(nin, NAN), *dxr = filled(nin, NAN);
        char what[96];
        for (int with_bias = 0; with_bias < 2; with_bias++) {
            fed_conv2d_forward_wino(out, scratch, x, w, with_bias ? b : NULL, c->N, c->G, &g);
            fed_conv2d_forward_ref(ref, x, w, with_bias ? b : NULL, c->N, &g);
            snprintf(what, sizeof what, "wino fwd case %zu bias=%d", t, with_bias);
            CHECK(close_scaled(what, out, ref, nout, WINO_TOL));
        }
        fed_conv2d_backward_data_wino(dx, scratch, dout, w, c->N, c->G, &g);
        fed_conv2d_backward_ref(dxr, NULL, NULL, dout, x, w, c->N, &g);
        snprintf(what, sizeof what, "wino dinp case %zu", t);
        CHECK(close_scaled(what, dx, dxr, nin, WINO_TOL));
        /* dw and db accumulate onto what is there (the same start for both). */
        const size_t nw = c->OC * c->C * 25;
        float *dw = random_floats(nw, &r), *db = random_floats(c->OC, &r);
        float *dwr = alloc_floats(nw), *dbr = alloc_floats(c->OC);
        memcpy(dwr, dw, nw * sizeof(float));
        memcpy(dbr, db, c->OC * sizeof(float));
        fed_conv2d_backward_filter_wino(dw, db, scratch, dout, x, c->N, c->G, &g);
        fed_conv2d_backward_ref(NULL, dwr, dbr, dout, x, w, c->N, &g);
        snprintf(what, sizeof what, "wino dw case %zu", t);
        CHECK(close_scaled(what, dw, dwr, nw, WINO_DW_TOL));
        snprintf(what, sizeof what, "wino db case %zu", t);
        CHECK(close_scaled(what, db, dbr, c->OC, WINO_TOL));
        /* NULL skips: db alone leaves dw's buffer unread, dw alone leaves db. */
        float *db2 = filled(c->OC, 0.0f), *dw2 = filled(nw, 0.0f);
        fed_conv2d_backward_filter_wino(NULL, db2, scratch, dout, x, c->N, c->G, &g);
        fed_conv2d_backward_filter_wino(dw2, NULL, scratch, dout, x, c->N, c->G, &g);
        float *dw2r = filled(nw, 0.0f), *db2r = filled(c->OC, 0.0f);
        fed_conv2d_backward_ref(NULL, dw2r, db2r, dout, x, w, c->N, &g);
        snprintf(what, sizeof what, "wino dw/db alone case %zu", t);
        CHECK(close_scaled(what, dw2, dw2r, nw, WINO_DW_TOL));
        CHECK(close_scaled(what, db2, db2r, c->OC, WINO_TOL));
        free(dw);
        free(db);
        free(dwr);
        free(dbr);
        free(dw2);
        free(db2);
        free(dw2r);
        free(db2r);
        free(x);
        free(w);
        free(b);
        free(dout);
        free(scratch);
        free(out);
        free(ref);
        free(dx);
        free(dxr);
    }
    fprintf(stderr, "  largest error seen: %.3g of max |want|\n", worst_seen);
}

/* A wrong weight (one tap changed by 1e-3) must fail the tolerance: the check can
 * tell a real difference from rounding. */
TEST(wino_tolerance_detects_a_wrong_tap) {
    fed_rng r;
    fed_rng_seed(&r, 3);
    fed_conv_geom g;
    CHECK(fed_conv_geom_init(&g, 4, 6, 6, 3, 5, 1, 2));
    const size_t nin = 4 * 36, nout = 3 * 36, nw = 3 * 4 * 25;
    float *x = random_floats(nin, &r), *w = random_floats(nw, &r), *w2 = alloc_floats(nw);
    memcpy(w2, w, nw * sizeof(float));
    w2[37] += 1e-3f;
    float *scratch = filled(fed_conv_wino_scratch_size(&g, 1), NAN);
    float *out = alloc_floats(nout), *ref = alloc_floats(nout);
    fed_conv2d_forward_wino(out, scratch, x, w2, NULL, 1, 1, &g);
    fed_conv2d_forward_ref(ref, x, w, NULL, 1, &g);
    double saved = worst_seen;
    CHECK(!close_scaled("expected mismatch", out, ref, nout, WINO_TOL));
    worst_seen = saved;
    free(x);
    free(w);
    free(w2);
    free(scratch);
    free(out);
    free(ref);
}

static char log_seen[256];
static int log_calls;

static void capture(void *user, fed_log_level level, const char *line) {
    (void)user;
    log_calls++;
    snprintf(log_seen, sizeof log_seen, "%s:%s", fed_log_level_name(level), line);
}

/* A model whose conv qualifies (8 -> 8 channels, 5x5, pad 2) matches the reference,
 * and FEDTUNE_CONV (read once, at the first convolution of the process: this test is
 * the only one here that runs a model) with an unknown value is named in one warning. */
TEST(model_conv_and_the_env_switch) {
    CHECK_INT(setenv("FEDTUNE_CONV", "fast", 1), 0);
    fed_log_set_handler(capture, NULL, FED_LOG_INFO);
    fed_arch *arch = NULL;
    fed_model *m = NULL;
    fed_arena *a = NULL;
    CHECK_OK(fed_arch_parse(&arch, "{\"input\":[8,5,7],\"layers\":[{\"type\":\"conv2d\","
                                   "\"out\":8,\"k\":5,\"pad\":2}]}"));
    if (arch) CHECK_OK(fed_model_new(&m, arch));
    fed_arch_destroy(&arch);
    CHECK_OK(fed_arena_new(&a, 0));
    if (!m || !a) goto out;
    fed_model_init(m, 4);
    fed_rng r;
    fed_rng_seed(&r, 8);
    const size_t N = 2, nin = N * 8 * 35;
    float *x = random_floats(nin, &r), *ref = filled(nin, NAN);
    const float *y = NULL;
    CHECK_OK(fed_model_forward(m, a, x, N, FED_MODE_EVAL, NULL, &y));
    CHECK_INT(log_calls, 1);
    CHECK_STR(log_seen, "warn:FEDTUNE_CONV=fast ignored: it takes im2col or auto");
    const float *p = fed_model_params(m);
    const fed_tensor *w = fed_model_tensor(m, 0), *b = fed_model_tensor(m, 1);
    CHECK_SIZE(w->numel, 8 * 8 * 25);
    CHECK_SIZE(b->numel, 8);
    fed_conv_geom g;
    CHECK(fed_conv_geom_init(&g, 8, 5, 7, 8, 5, 1, 2));
    fed_conv2d_forward_ref(ref, x, p + w->offset, p + b->offset, N, &g);
    if (y) CHECK(close_scaled("model conv", y, ref, nin, WINO_TOL));
    free(x);
    free(ref);
out:
    fed_log_set_handler(NULL, NULL, FED_LOG_INFO);
    fed_arena_destroy(&a);
    fed_model_destroy(&m);
}

int main(void) {
    RUN(wino_1d_matches_direct_correlation);
    RUN(wino_fits_and_sizes);
    RUN(wino_matches_reference);
    RUN(wino_tolerance_detects_a_wrong_tap);
    RUN(model_conv_and_the_env_switch);
    return test_report();
}
