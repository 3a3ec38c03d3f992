/* Finite-difference checks of every backward pass: each layer kernel and each loss on
 * its own over several shapes (batch size 1 included), then whole models built from
 * JSON specs, frozen tensors among them. A kernel is checked through the scalar
 * objective L = sum(out * R) for a fixed random R, so its dout is R; a loss is its own
 * objective. Each input or weight element moves by +-eps in float, the objective is
 * accumulated in double, and the central difference must agree with the analytic
 * gradient to |a - n| <= TOL * max(1, |a|, |n|). Hand-computed loss values sit beside
 * the loss checks. Comparisons against the naive reference kernels live in
 * test_core_kernels.c. */
#include "core/arch.h"
#include "core/arena.h"
#include "core/kernels.h"
#include "core/loss.h"
#include "core/model.h"
#include "core/rng.h"
#include "tests/test.h"

#include <stdint.h>
#include <stdlib.h>

/* Steps of the central differences and the tolerances they must meet: a whole model
 * needs the smaller step (relu and maxpool kinks), whose float rounding costs accuracy. */
#define EPS       1e-2f
#define TOL       1e-3
#define EPS_MODEL 1e-3f
#define TOL_MODEL 2e-3

/* Worst relative error of any finite-difference check, printed at the end. */
static double worst_seen_;

static float *alloc_floats(size_t n) {
    float *p = calloc(n ? n : 1, sizeof(float));
    if (!p) abort();
    return p;
}

static float *uniform(size_t n, fed_rng *r, float lo, float hi) {
    float *p = alloc_floats(n);
    for (size_t i = 0; i < n; i++) p[i] = lo + (hi - lo) * fed_rng_uniform(r);
    return p;
}

/* sum(out * R) in double: the objective whose gradient with respect to out is R. */
static double weighted_sum(const float *out, const float *R, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)out[i] * (double)R[i];
    return s;
}

typedef double (*objective)(void *ctx);

/* Compares the analytic gradient g of f with respect to x[0], x[step], ... (fewer than
 * n) with central differences of f; x is restored. Returns 1 when every element agrees;
 * otherwise prints the worst one under the label and returns 0. */
static int grad_ok(const char *what, float *x, const float *g, size_t n, size_t step, objective f,
                   void *ctx, float eps, double tol) {
    double worst = 0.0, wa = 0.0, wn = 0.0;
    size_t at = 0;
    for (size_t i = 0; i < n; i += step) {
        const float save = x[i];
        const float hi = save + eps, lo = save - eps;
        x[i] = hi;
        const double fp = f(ctx);
        x[i] = lo;
        const double fm = f(ctx);
        x[i] = save;
        const double num = (fp - fm) / ((double)hi - (double)lo);
        const double ana = (double)g[i];
        double err = fabs(ana - num) / fmax(1.0, fmax(fabs(ana), fabs(num)));
        if (isnan(err)) err = (double)INFINITY;
        if (i == 0 || err > worst) {
            worst = err;
            wa = ana;
            wn = num;
            at = i;
        }
    }
    if (worst > worst_seen_) worst_seen_ = worst;
    if (worst <= tol) return 1;
    fprintf(stderr,
            "  %s: worst at element %zu of %zu: analytic %.9g, numeric %.9g (rel err %.3g)\n", what,
            at, n, wa, wn, worst);
    return 0;
}

/* ---- layer kernels -------------------------------------------------------------------- */

enum { ACT_RELU, ACT_GELU, ACT_TANH, ACT_SIGMOID };

/* Everything one layer's objective needs; each test uses the fields of its layer. */
typedef struct gc {
    size_t N, C, OC, H, W, K, S; /* sizes, as the kernel reads them */
    fed_conv_geom g;             /* conv2d */
    float *x, *w, *b;            /* perturbed: input, weight (or table), bias */
    float *out, *col, *s1, *s2;  /* forward output and scratch (mask, mean, rstd) */
    int32_t *idx;                /* argmax, ids or labels */
    float *R;                    /* objective weights, one per output */
    size_t nout;                 /* outputs */
    int act;                     /* ACT_* */
    float p;                     /* dropout probability, label smoothing */
    fed_rng rng;                 /* dropout: copied before every forward, so the mask is fixed */
    float *t;                    /* loss targets */
} gc;

static void gc_free(gc *c) {
    free(c->x);
    free(c->w);
    free(c->b);
    free(c->out);
    free(c->col);
    free(c->s1);
    free(c->s2);
    free(c->idx);
    free(c->R);
    free(c->t);
    memset(c, 0, sizeof *c);
}

static double obj_linear(void *p) {
    gc *c = p;
    fed_linear_forward(c->out, c->x, c->w, c->b, c->N, c->C, c->OC);
    return weighted_sum(c->out, c->R, c->nout);
}

TEST(linear_backward) {
    static const size_t shapes[][3] = {{1, 1, 1}, {1, 4, 3}, {3, 5, 2}, {6, 2, 7}};
    fed_rng r;
    fed_rng_seed(&r, 11);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        gc c = {.N = shapes[s][0], .C = shapes[s][1], .OC = shapes[s][2]};
        c.nout = c.N * c.OC;
        c.x = uniform(c.N * c.C, &r, -1, 1);
        c.w = uniform(c.OC * c.C, &r, -1, 1);
        c.b = uniform(c.OC, &r, -1, 1);
        c.R = uniform(c.nout, &r, -1, 1);
        c.out = alloc_floats(c.nout);
        float *dx = alloc_floats(c.N * c.C), *dw = alloc_floats(c.OC * c.C);
        float *db = alloc_floats(c.OC);
        fed_linear_backward(dx, dw, db, c.R, c.x, c.w, c.N, c.C, c.OC);
        char what[64];
        snprintf(what, sizeof what, "linear N=%zu C=%zu OC=%zu dinp", c.N, c.C, c.OC);
        CHECK(grad_ok(what, c.x, dx, c.N * c.C, 1, obj_linear, &c, EPS, TOL));
        snprintf(what, sizeof what, "linear N=%zu C=%zu OC=%zu dw", c.N, c.C, c.OC);
        CHECK(grad_ok(what, c.w, dw, c.OC * c.C, 1, obj_linear, &c, EPS, TOL));
        snprintf(what, sizeof what, "linear N=%zu C=%zu OC=%zu db", c.N, c.C, c.OC);
        CHECK(grad_ok(what, c.b, db, c.OC, 1, obj_linear, &c, EPS, TOL));
        free(dx);
        free(dw);
        free(db);
        gc_free(&c);
    }
}

static double obj_conv(void *p) {
    gc *c = p;
    fed_conv2d_forward(c->out, c->col, c->x, c->w, c->b, c->N, &c->g);
    return weighted_sum(c->out, c->R, c->nout);
}

TEST(conv2d_backward) {
    /* N, C, H, W, OC, K, stride, pad */
    static const size_t shapes[][8] = {
        {1, 1, 3, 3, 1, 2, 1, 0}, {2, 2, 5, 4, 3, 3, 1, 1}, {1, 3, 7, 6, 2, 3, 2, 1},
        {2, 1, 4, 5, 2, 2, 2, 2}, {1, 2, 3, 3, 1, 1, 1, 0}, {1, 2, 6, 6, 2, 4, 3, 1},
    };
    fed_rng r;
    fed_rng_seed(&r, 12);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const size_t *d = shapes[s];
        gc c = {.N = d[0]};
        CHECK(fed_conv_geom_init(&c.g, d[1], d[2], d[3], d[4], d[5], d[6], d[7]));
        const size_t nin = c.N * d[1] * d[2] * d[3], nw = d[4] * d[1] * d[5] * d[5];
        c.nout = c.N * d[4] * c.g.OH * c.g.OW;
        c.x = uniform(nin, &r, -1, 1);
        c.w = uniform(nw, &r, -1, 1);
        c.b = uniform(d[4], &r, -1, 1);
        c.R = uniform(c.nout, &r, -1, 1);
        c.out = alloc_floats(c.nout);
        c.col = alloc_floats(fed_conv_col_size(&c.g));
        float *dx = alloc_floats(nin), *dw = alloc_floats(nw), *db = alloc_floats(d[4]);
        fed_conv2d_backward(dx, dw, db, c.col, c.R, c.x, c.w, c.N, &c.g);
        char what[64];
        snprintf(what, sizeof what, "conv2d case %zu dinp", s);
        CHECK(grad_ok(what, c.x, dx, nin, 1, obj_conv, &c, EPS, TOL));
        snprintf(what, sizeof what, "conv2d case %zu dw", s);
        CHECK(grad_ok(what, c.w, dw, nw, 1, obj_conv, &c, EPS, TOL));
        snprintf(what, sizeof what, "conv2d case %zu db", s);
        CHECK(grad_ok(what, c.b, db, d[4], 1, obj_conv, &c, EPS, TOL));
        free(dx);
        free(dw);
        free(db);
        gc_free(&c);
    }
}

static double obj_maxpool(void *p) {
    gc *c = p;
    fed_maxpool2d_forward(c->out, c->idx, c->x, c->N, c->C, c->H, c->W, c->K, c->S);
    return weighted_sum(c->out, c->R, c->nout);
}

static double obj_avgpool(void *p) {
    gc *c = p;
    fed_avgpool2d_forward(c->out, c->x, c->N, c->C, c->H, c->W, c->K, c->S);
    return weighted_sum(c->out, c->R, c->nout);
}

static double obj_globalavgpool(void *p) {
    gc *c = p;
    fed_globalavgpool_forward(c->out, c->x, c->N, c->C, c->H * c->W);
    return weighted_sum(c->out, c->R, c->nout);
}

/* Distinct values 0.1 apart in shuffled order: a +-eps move never changes an argmax. */
static float *spread_values(size_t n, fed_rng *r) {
    size_t *perm = malloc(n * sizeof *perm);
    float *x = alloc_floats(n);
    if (!perm) abort();
    for (size_t i = 0; i < n; i++) perm[i] = i;
    fed_rng_shuffle(r, perm, n);
    for (size_t i = 0; i < n; i++) x[i] = 0.1f * (float)perm[i] - 0.05f * (float)n;
    free(perm);
    return x;
}

TEST(pooling_backward) {
    /* N, C, H, W, K, S */
    static const size_t shapes[][6] = {{1, 1, 4, 4, 2, 2}, {2, 3, 5, 6, 2, 1}, {1, 2, 7, 5, 3, 2},
                                       {1, 1, 3, 3, 3, 3}, {3, 1, 6, 4, 2, 3}, {1, 2, 1, 5, 1, 2}};
    fed_rng r;
    fed_rng_seed(&r, 13);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const size_t *d = shapes[s];
        gc c = {.N = d[0], .C = d[1], .H = d[2], .W = d[3], .K = d[4], .S = d[5]};
        const size_t OH = (c.H - c.K) / c.S + 1, OW = (c.W - c.K) / c.S + 1;
        const size_t nin = c.N * c.C * c.H * c.W;
        c.nout = c.N * c.C * OH * OW;
        c.x = spread_values(nin, &r);
        c.R = uniform(c.nout, &r, -1, 1);
        c.out = alloc_floats(c.nout);
        c.idx = calloc(c.nout, sizeof *c.idx);
        float *dx = alloc_floats(nin);
        char what[64];

        fed_maxpool2d_forward(c.out, c.idx, c.x, c.N, c.C, c.H, c.W, c.K, c.S);
        fed_maxpool2d_backward(dx, c.R, c.idx, c.N, c.C, c.H, c.W, c.K, c.S);
        snprintf(what, sizeof what, "maxpool2d case %zu", s);
        CHECK(grad_ok(what, c.x, dx, nin, 1, obj_maxpool, &c, EPS, TOL));

        fed_avgpool2d_backward(dx, c.R, c.N, c.C, c.H, c.W, c.K, c.S);
        snprintf(what, sizeof what, "avgpool2d case %zu", s);
        CHECK(grad_ok(what, c.x, dx, nin, 1, obj_avgpool, &c, EPS, TOL));

        free(c.R);
        c.nout = c.N * c.C;
        c.R = uniform(c.nout, &r, -1, 1);
        fed_globalavgpool_backward(dx, c.R, c.N, c.C, c.H * c.W);
        snprintf(what, sizeof what, "globalavgpool case %zu", s);
        CHECK(grad_ok(what, c.x, dx, nin, 1, obj_globalavgpool, &c, EPS, TOL));
        free(dx);
        gc_free(&c);
    }
}

static void act_forward(gc *c) {
    switch (c->act) {
    case ACT_RELU:
        fed_relu_forward(c->out, c->x, c->nout);
        break;
    case ACT_GELU:
        fed_gelu_forward(c->out, c->x, c->nout);
        break;
    case ACT_TANH:
        fed_tanh_forward(c->out, c->x, c->nout);
        break;
    default:
        fed_sigmoid_forward(c->out, c->x, c->nout);
        break;
    }
}

static double obj_act(void *p) {
    gc *c = p;
    act_forward(c);
    return weighted_sum(c->out, c->R, c->nout);
}

TEST(activations_backward) {
    static const char *const names[] = {"relu", "gelu", "tanh", "sigmoid"};
    static const size_t sizes[] = {1, 7, 60};
    fed_rng r;
    fed_rng_seed(&r, 14);
    for (int act = ACT_RELU; act <= ACT_SIGMOID; act++) {
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            gc c = {.act = act, .nout = sizes[s]};
            c.x = uniform(c.nout, &r, -4, 4);
            /* Away from relu's kink: |x| >= 0.1. */
            for (size_t i = 0; i < c.nout; i++)
                if (fabsf(c.x[i]) < 0.1f) c.x[i] = c.x[i] < 0.0f ? -0.1f : 0.1f;
            c.R = uniform(c.nout, &r, -1, 1);
            c.out = alloc_floats(c.nout);
            float *dx = alloc_floats(c.nout);
            act_forward(&c);
            switch (act) {
            case ACT_RELU:
                fed_relu_backward(dx, c.R, c.x, c.nout);
                break;
            case ACT_GELU:
                fed_gelu_backward(dx, c.R, c.x, c.nout);
                break;
            case ACT_TANH:
                fed_tanh_backward(dx, c.R, c.out, c.nout); /* from the saved output */
                break;
            default:
                fed_sigmoid_backward(dx, c.R, c.out, c.nout);
                break;
            }
            char what[32];
            snprintf(what, sizeof what, "%s n=%zu", names[act], c.nout);
            CHECK(grad_ok(what, c.x, dx, c.nout, 1, obj_act, &c, EPS, TOL));
            free(dx);
            gc_free(&c);
        }
    }
    /* Known slopes: relu' = 0 / 1, gelu'(0) = 0.5, tanh'(0) = 1, sigmoid'(0) = 0.25. */
    const float x[2] = {-0.5f, 0.5f}, z[1] = {0.0f}, one[2] = {1, 1};
    float d[2], y[1];
    fed_relu_backward(d, one, x, 2);
    CHECK(d[0] == 0.0f && d[1] == 1.0f);
    fed_gelu_backward(d, one, z, 1);
    CHECK_NEAR(d[0], 0.5, 1e-7);
    fed_tanh_forward(y, z, 1);
    fed_tanh_backward(d, one, y, 1);
    CHECK_NEAR(d[0], 1.0, 1e-7);
    fed_sigmoid_forward(y, z, 1);
    fed_sigmoid_backward(d, one, y, 1);
    CHECK_NEAR(d[0], 0.25, 1e-7);
    /* gelu(1) = Phi(1) = 0.841344746; sigmoid(+-30) saturates without overflow. */
    const float xs[3] = {1.0f, 30.0f, -30.0f};
    float ys[3];
    fed_gelu_forward(ys, xs, 1);
    CHECK_NEAR(ys[0], 0.841344746, 1e-6);
    fed_sigmoid_forward(ys, xs, 3);
    CHECK_NEAR(ys[1], 1.0, 1e-7);
    CHECK(ys[2] > 0.0f && ys[2] < 1e-12f);
}

static double obj_dropout(void *p) {
    gc *c = p;
    fed_rng r = c->rng;
    fed_dropout_forward(c->out, c->s1, c->x, c->nout, c->p, &r);
    return weighted_sum(c->out, c->R, c->nout);
}

TEST(dropout_backward) {
    fed_rng r;
    fed_rng_seed(&r, 15);
    /* With a fixed mask the layer is linear: dinp = dout * mask, and the finite
     * differences agree. */
    static const size_t sizes[] = {1, 9, 50};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        gc c = {.nout = sizes[s], .p = 0.4f};
        fed_rng_seed(&c.rng, 100 + s);
        c.x = uniform(c.nout, &r, -1, 1);
        c.R = uniform(c.nout, &r, -1, 1);
        c.out = alloc_floats(c.nout);
        c.s1 = alloc_floats(c.nout);
        float *dx = alloc_floats(c.nout);
        obj_dropout(&c);
        fed_dropout_backward(dx, c.R, c.s1, c.nout);
        int exact = 1;
        for (size_t i = 0; i < c.nout; i++) exact &= dx[i] == c.R[i] * c.s1[i];
        CHECK(exact);
        char what[32];
        snprintf(what, sizeof what, "dropout n=%zu", c.nout);
        CHECK(grad_ok(what, c.x, dx, c.nout, 1, obj_dropout, &c, EPS, TOL));
        free(dx);
        gc_free(&c);
    }

    /* p = 0 is the identity, mask all ones. */
    enum { N = 100000 };
    float *x = uniform(N, &r, -1, 1), *out = alloc_floats(N), *mask = alloc_floats(N);
    fed_rng d;
    fed_rng_seed(&d, 16);
    fed_dropout_forward(out, mask, x, N, 0.0f, &d);
    int identity = 1;
    for (size_t i = 0; i < N; i++) identity &= out[i] == x[i];
    CHECK(identity);
    int ones = 1;
    for (size_t i = 0; i < N; i++) ones &= mask[i] == 1.0f;
    CHECK(ones);

    /* p = 0.3 keeps about 70% (binomial sd = sqrt(N p (1-p)) ~ 145: allow 5 sd), each
     * kept value scaled to x / (1 - p), each dropped one exactly 0. */
    const float p = 0.3f;
    fed_dropout_forward(out, mask, x, N, p, &d);
    size_t kept = 0;
    int scaled = 1, zeroed = 1, masked = 1;
    const double scale = 1.0 / (1.0 - (double)p);
    for (size_t i = 0; i < N; i++) {
        if (mask[i] != 0.0f) {
            kept++;
            scaled &= fabs((double)out[i] - (double)x[i] * scale) <= 1e-6 * fabs((double)x[i]);
            masked &= fabs((double)mask[i] - scale) <= 1e-6;
        } else {
            zeroed &= out[i] == 0.0f;
        }
    }
    const double sd = sqrt((double)N * (double)p * (1.0 - (double)p));
    CHECK_NEAR((double)kept, (double)N * (1.0 - (double)p), 5.0 * sd);
    CHECK(scaled);
    CHECK(zeroed);
    CHECK(masked);
    free(x);
    free(out);
    free(mask);
}

static double obj_layernorm(void *p) {
    gc *c = p;
    fed_layernorm_forward(c->out, c->s1, c->s2, c->x, c->w, c->b, c->N, c->C, 1e-5f);
    return weighted_sum(c->out, c->R, c->nout);
}

TEST(layernorm_backward) {
    static const size_t shapes[][2] = {{1, 7}, {3, 16}, {5, 2}, {2, 5}};
    fed_rng r;
    fed_rng_seed(&r, 17);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        gc c = {.N = shapes[s][0], .C = shapes[s][1]};
        c.nout = c.N * c.C;
        c.x = uniform(c.nout, &r, -2, 2);
        c.w = uniform(c.C, &r, 0.5f, 1.5f);
        c.b = uniform(c.C, &r, -0.5f, 0.5f);
        c.R = uniform(c.nout, &r, -1, 1);
        c.out = alloc_floats(c.nout);
        c.s1 = alloc_floats(c.N);
        c.s2 = alloc_floats(c.N);
        float *dx = alloc_floats(c.nout), *dw = alloc_floats(c.C), *db = alloc_floats(c.C);
        obj_layernorm(&c);
        fed_layernorm_backward(dx, dw, db, c.R, c.x, c.s1, c.s2, c.w, c.N, c.C);
        char what[48];
        snprintf(what, sizeof what, "layernorm N=%zu C=%zu dinp", c.N, c.C);
        CHECK(grad_ok(what, c.x, dx, c.nout, 1, obj_layernorm, &c, EPS, TOL));
        snprintf(what, sizeof what, "layernorm N=%zu C=%zu dw", c.N, c.C);
        CHECK(grad_ok(what, c.w, dw, c.C, 1, obj_layernorm, &c, EPS, TOL));
        snprintf(what, sizeof what, "layernorm N=%zu C=%zu db", c.N, c.C);
        CHECK(grad_ok(what, c.b, db, c.C, 1, obj_layernorm, &c, EPS, TOL));

        /* dw, db accumulate; NULL skips them and leaves dinp the same. */
        float *dx2 = alloc_floats(c.nout), *dw2 = alloc_floats(c.C), *db2 = alloc_floats(c.C);
        for (size_t i = 0; i < c.C; i++) dw2[i] = db2[i] = 1.0f;
        fed_layernorm_backward(dx2, dw2, db2, c.R, c.x, c.s1, c.s2, c.w, c.N, c.C);
        int added = 1;
        for (size_t i = 0; i < c.C; i++)
            added &=
                fabsf(dw2[i] - (dw[i] + 1.0f)) <= 1e-6f && fabsf(db2[i] - (db[i] + 1.0f)) <= 1e-6f;
        CHECK(added);
        for (size_t i = 0; i < c.nout; i++) dx2[i] = NAN;
        fed_layernorm_backward(dx2, NULL, NULL, c.R, c.x, c.s1, c.s2, c.w, c.N, c.C);
        int same = 1;
        for (size_t i = 0; i < c.nout; i++) same &= dx2[i] == dx[i];
        CHECK(same);
        free(dx2);
        free(dw2);
        free(db2);
        free(dx);
        free(dw);
        free(db);
        gc_free(&c);
    }
    /* Forward by hand: [1 2 3] normalises to [-1.2247 0 1.2247] (eps aside). */
    const float x[3] = {1, 2, 3}, w[3] = {1, 1, 2}, b[3] = {0, 5, 0};
    float y[3], mean[1], rstd[1];
    fed_layernorm_forward(y, mean, rstd, x, w, b, 1, 3, 0.0f);
    CHECK_NEAR(mean[0], 2.0, 1e-7);
    CHECK_NEAR(rstd[0], 1.22474487, 1e-6);
    CHECK_NEAR(y[0], -1.22474487, 1e-6);
    CHECK_NEAR(y[1], 5.0, 1e-6);
    CHECK_NEAR(y[2], 2.44948974, 1e-6);
}

static double obj_embedding(void *p) {
    gc *c = p;
    fed_embedding_forward(c->out, c->idx, c->w, c->N, c->C);
    return weighted_sum(c->out, c->R, c->nout);
}

TEST(embedding_backward) {
    /* V, D, then N ids (repeats accumulate) */
    static const int32_t ids_a[] = {2};
    static const int32_t ids_b[] = {0, 3, 3, 1, 3, 0};
    static const int32_t ids_c[] = {4, 4, 4, 4};
    const struct {
        size_t V, D, N;
        const int32_t *ids;
    } cases[] = {{3, 1, 1, ids_a}, {5, 4, 6, ids_b}, {6, 3, 4, ids_c}};
    fed_rng r;
    fed_rng_seed(&r, 18);
    for (size_t s = 0; s < sizeof cases / sizeof cases[0]; s++) {
        const size_t V = cases[s].V, D = cases[s].D;
        gc c = {.N = cases[s].N, .C = D};
        c.nout = c.N * D;
        c.idx = calloc(c.N, sizeof *c.idx);
        memcpy(c.idx, cases[s].ids, c.N * sizeof *c.idx);
        c.w = uniform(V * D, &r, -1, 1);
        c.R = uniform(c.nout, &r, -1, 1);
        c.out = alloc_floats(c.nout);
        float *dt = alloc_floats(V * D);
        fed_embedding_backward(dt, c.R, c.idx, c.N, D);
        char what[32];
        snprintf(what, sizeof what, "embedding case %zu", s);
        CHECK(grad_ok(what, c.w, dt, V * D, 1, obj_embedding, &c, EPS, TOL));

        /* Accumulates onto what the table gradient held: row v gains the sum of dout over
         * the positions with id v; rows never looked up keep their value. */
        float *acc = uniform(V * D, &r, -1, 1), *before = alloc_floats(V * D);
        memcpy(before, acc, V * D * sizeof(float));
        fed_embedding_backward(acc, c.R, c.idx, c.N, D);
        int ok = 1;
        for (size_t v = 0; v < V; v++) {
            for (size_t j = 0; j < D; j++) {
                double want = (double)before[v * D + j];
                for (size_t n = 0; n < c.N; n++)
                    if ((size_t)c.idx[n] == v) want += (double)c.R[n * D + j];
                ok &= fabs((double)acc[v * D + j] - want) <= 1e-6;
            }
        }
        CHECK(ok);
        free(acc);
        free(before);
        free(dt);
        gc_free(&c);
    }
}

/* ---- losses ----------------------------------------------------------------------------- */

static double obj_ce(void *p) {
    gc *c = p;
    return fed_softmax_ce(NULL, c->x, c->idx, c->N, c->C, c->p);
}

static double obj_bce(void *p) {
    gc *c = p;
    return fed_bce_logits(NULL, c->x, c->t, c->nout);
}

static double obj_mse(void *p) {
    gc *c = p;
    return fed_mse(NULL, c->x, c->t, c->nout);
}

TEST(losses_backward) {
    static const size_t shapes[][2] = {{1, 3}, {1, 1}, {4, 5}, {7, 2}, {2, 10}};
    static const float smoothing[] = {0.0f, 0.1f, 0.45f};
    fed_rng r;
    fed_rng_seed(&r, 19);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        gc c = {.N = shapes[s][0], .C = shapes[s][1]};
        c.nout = c.N * c.C;
        c.x = uniform(c.nout, &r, -3, 3);
        c.t = uniform(c.nout, &r, 0, 1);
        for (size_t i = 0; i < c.nout; i += 3) c.t[i] = (float)(i % 2); /* some hard 0/1 */
        c.idx = calloc(c.N, sizeof *c.idx);
        for (size_t n = 0; n < c.N; n++) c.idx[n] = (int32_t)fed_rng_below(&r, c.C);
        float *d = alloc_floats(c.nout);
        char what[64];
        for (size_t k = 0; k < sizeof smoothing / sizeof smoothing[0]; k++) {
            c.p = smoothing[k];
            double loss = fed_softmax_ce(d, c.x, c.idx, c.N, c.C, c.p);
            CHECK_NEAR(loss, obj_ce(&c), 0.0); /* the gradient does not change the value */
            snprintf(what, sizeof what, "softmax_ce N=%zu C=%zu s=%g", c.N, c.C, (double)c.p);
            CHECK(grad_ok(what, c.x, d, c.nout, 1, obj_ce, &c, EPS, TOL));
        }
        double loss = fed_bce_logits(d, c.x, c.t, c.nout);
        CHECK_NEAR(loss, obj_bce(&c), 0.0);
        snprintf(what, sizeof what, "bce_logits n=%zu", c.nout);
        CHECK(grad_ok(what, c.x, d, c.nout, 1, obj_bce, &c, EPS, TOL));
        loss = fed_mse(d, c.x, c.t, c.nout);
        CHECK_NEAR(loss, obj_mse(&c), 0.0);
        snprintf(what, sizeof what, "mse n=%zu", c.nout);
        CHECK(grad_ok(what, c.x, d, c.nout, 1, obj_mse, &c, EPS, TOL));
        free(d);
        gc_free(&c);
    }
}

TEST(losses_known_values) {
    /* log(e + e^2 + e^3) - 3 = log(1 + e^-1 + e^-2) = 0.40760596. */
    const float z[3] = {1, 2, 3};
    const int32_t label[1] = {2};
    float d[3];
    CHECK_NEAR(fed_softmax_ce(d, z, label, 1, 3, 0.0f), 0.40760596, 1e-7);
    /* dlogits = softmax - onehot = [0.09003057 0.24472847 0.66524096 - 1]. */
    CHECK_NEAR(d[0], 0.09003057, 1e-7);
    CHECK_NEAR(d[1], 0.24472847, 1e-7);
    CHECK_NEAR(d[2], -0.33475904, 1e-7);
    /* Smoothing 0.3 over 3 classes: targets [0.1 0.1 0.8]; loss = logsumexp - sum t z
     * = 3.40760596 - (0.1 + 0.2 + 2.4) = 0.70760596; dlogits = softmax - targets. */
    CHECK_NEAR(fed_softmax_ce(d, z, label, 1, 3, 0.3f), 0.70760596, 1e-7);
    CHECK_NEAR(d[0], 0.09003057 - 0.1, 1e-7);
    CHECK_NEAR(d[2], 0.66524096 - 0.8, 1e-7);
    /* A batch of two takes the mean (and halves the gradient). */
    const float z2[6] = {1, 2, 3, 1, 2, 3};
    const int32_t labels2[2] = {2, 0};
    float d2[6];
    CHECK_NEAR(fed_softmax_ce(d2, z2, labels2, 2, 3, 0.0f), (0.40760596 + 2.40760596) / 2.0, 1e-7);
    CHECK_NEAR(d2[3], (0.09003057 - 1.0) / 2.0, 1e-7);
    /* Huge logits stay finite. */
    const float big[3] = {1000, 0, -1000};
    const int32_t zero[1] = {0};
    CHECK_NEAR(fed_softmax_ce(d, big, zero, 1, 3, 0.0f), 0.0, 1e-12);
    CHECK(isfinite(d[1]) && isfinite(d[2]));

    /* BCE with logits: z = 0, t = 1 gives ln 2; z = 2, t = 0 gives log(1 + e^2). */
    const float zb[2] = {0, 2}, tb[2] = {1, 0};
    float db[2];
    CHECK_NEAR(fed_bce_logits(db, zb, tb, 1), 0.69314718, 1e-7);
    CHECK_NEAR(db[0], -0.5, 1e-7);
    CHECK_NEAR(fed_bce_logits(db, zb, tb, 2), (0.69314718 + 2.12692801) / 2.0, 1e-7);
    CHECK_NEAR(db[1], 0.88079708 / 2.0, 1e-7);
    const float zh[2] = {100, -100}, th[2] = {0, 1};
    CHECK_NEAR(fed_bce_logits(db, zh, th, 2), 100.0, 1e-9);
    CHECK_NEAR(db[0], 0.5, 1e-7);

    /* MSE: pred [1 2], target [0 4] -> (1 + 4) / 2 = 2.5, gradient 2 (p - t) / n. */
    const float pm[2] = {1, 2}, tm[2] = {0, 4};
    float dm[2];
    CHECK_NEAR(fed_mse(dm, pm, tm, 2), 2.5, 0.0);
    CHECK(dm[0] == 1.0f && dm[1] == -2.0f);
}

/* ---- whole models ------------------------------------------------------------------------ */

/* One model, batch and loss; the objective is the mean loss of a train-mode forward
 * whose dropout masks are fixed by starting every pass from the same rng. */
typedef struct mcase {
    fed_model *m;          /* the network */
    fed_arena *a;          /* its activations */
    const float *x;        /* (N, input_size) */
    size_t N;              /* batch */
    const int32_t *labels; /* SOFTMAX_CE */
    const float *targets;  /* BCE, MSE */
    fed_loss_kind kind;    /* which loss */
    float smoothing;       /* SOFTMAX_CE */
    fed_rng rng;           /* dropout, copied per pass */
} mcase;

static double model_loss(mcase *c, float *dlogits) {
    fed_arena_reset(c->a);
    fed_rng r = c->rng;
    const float *out = NULL;
    fed_err e = fed_model_forward(c->m, c->a, c->x, c->N, FED_MODE_TRAIN, &r, &out);
    if (e != FED_OK) {
        CHECK_OK(e);
        return (double)NAN;
    }
    const size_t K = fed_model_output_size(c->m);
    switch (c->kind) {
    case FED_LOSS_SOFTMAX_CE:
        return fed_softmax_ce(dlogits, out, c->labels, c->N, K, c->smoothing);
    case FED_LOSS_BCE:
        return fed_bce_logits(dlogits, out, c->targets, c->N * K);
    case FED_LOSS_MSE:
        break;
    case FED_LOSS_NEXT_TOKEN: {
        size_t T = fed_model_input_size(c->m), count, correct;
        return fed_next_token_ce(dlogits, out, c->x, c->N, T, K / T, &count, &correct);
    }
    }
    return fed_mse(dlogits, out, c->targets, c->N * K);
}

static double obj_model(void *p) {
    return model_loss(p, NULL);
}

static fed_model *model_from(const char *spec, uint64_t seed) {
    fed_arch *arch = NULL;
    fed_model *m = NULL;
    fed_err e = fed_arch_parse(&arch, spec);
    if (e == FED_OK) e = fed_model_new(&m, arch);
    CHECK_OK(e);
    fed_arch_destroy(&arch);
    if (!m) return NULL;
    /* Seeded init, then a jitter so biases are not 0 nor layernorm weights 1. */
    fed_model_init(m, seed);
    fed_rng r;
    fed_rng_seed(&r, seed + 1);
    float *p = fed_model_params(m);
    for (size_t i = 0; i < fed_model_num_params(m); i++)
        p[i] += 0.2f * (fed_rng_uniform(&r) - 0.5f);
    return m;
}

/* Back-propagates the loss of c once, with frozen tensors' gradient slots prefilled with
 * a sentinel and the rest zero; then checks a sample of every trainable tensor's
 * gradient by finite differences and every frozen tensor's slot for the sentinel. */
static void check_model(const char *label, mcase *c) {
    fed_model *m = c->m;
    const float sentinel = 7.25f;
    float *g = fed_model_grads(m);
    for (size_t i = 0; i < fed_model_num_tensors(m); i++) {
        const fed_tensor *t = fed_model_tensor(m, i);
        for (size_t j = 0; j < t->numel; j++) g[t->offset + j] = t->trainable ? 0.0f : sentinel;
    }
    const size_t nout = c->N * fed_model_output_size(m);
    float *dout = alloc_floats(nout);
    const double loss = model_loss(c, dout);
    CHECK(isfinite(loss));
    CHECK_OK(fed_model_backward(m, c->a, dout));
    float *analytic = alloc_floats(fed_model_num_params(m));
    memcpy(analytic, g, fed_model_num_params(m) * sizeof(float));
    for (size_t i = 0; i < fed_model_num_tensors(m); i++) {
        const fed_tensor *t = fed_model_tensor(m, i);
        char what[96];
        snprintf(what, sizeof what, "%s N=%zu %s", label, c->N, t->name);
        if (!t->trainable) {
            int untouched = 1;
            for (size_t j = 0; j < t->numel; j++) untouched &= g[t->offset + j] == sentinel;
            if (!untouched) fprintf(stderr, "  %s: frozen gradient was written\n", what);
            CHECK(untouched);
            continue;
        }
        /* About a dozen elements of each tensor, spread over it; an all-zero sample (a
         * dead relu layer, say) would prove nothing, so it fails too. */
        const size_t step = t->numel > 12 ? t->numel / 12 : 1;
        double biggest = 0.0;
        for (size_t j = 0; j < t->numel; j += step)
            biggest = fmax(biggest, fabs((double)analytic[t->offset + j]));
        if (biggest < 1e-4) fprintf(stderr, "  %s: gradient sample all zero\n", what);
        CHECK(biggest >= 1e-4);
        CHECK(grad_ok(what, fed_model_params(m) + t->offset, analytic + t->offset, t->numel, step,
                      obj_model, c, EPS_MODEL, TOL_MODEL));
    }
    free(analytic);
    free(dout);
}

/* Runs check_model for batch sizes 1 and 3 of random inputs (or the given token ids). */
static void check_model_batches(const char *label, fed_model *m, fed_loss_kind kind,
                                float smoothing, const float *ids) {
    if (!m) return;
    fed_arena *a = NULL;
    CHECK_OK(fed_arena_new(&a, 0));
    if (!a) return;
    fed_rng r;
    fed_rng_seed(&r, 21);
    const size_t D = fed_model_input_size(m), K = fed_model_output_size(m);
    for (size_t N = 1; N <= 3; N += 2) {
        float *x = ids ? alloc_floats(N * D) : uniform(N * D, &r, -1, 1);
        if (ids) memcpy(x, ids, N * D * sizeof(float));
        float *targets = uniform(N * K, &r, kind == FED_LOSS_MSE ? -1.0f : 0.0f, 1);
        int32_t labels[3];
        for (size_t n = 0; n < N; n++) labels[n] = (int32_t)fed_rng_below(&r, K);
        mcase c = {m, a, x, N, labels, targets, kind, smoothing, fed_rng_stream(5, N)};
        check_model(label, &c);
        free(x);
        free(targets);
    }
    fed_arena_destroy(&a);
}

TEST(mlp_gradients) {
    /* linear, layernorm, gelu, dropout (train mode, fixed mask), tanh; CE with smoothing. */
    fed_model *m = model_from("{\"input\":[6],\"layers\":[{\"type\":\"linear\",\"out\":8},"
                              "{\"type\":\"layernorm\"},{\"type\":\"gelu\"},"
                              "{\"type\":\"dropout\",\"p\":0.25},{\"type\":\"linear\",\"out\":5},"
                              "{\"type\":\"tanh\"},{\"type\":\"linear\",\"out\":3}]}",
                              1);
    check_model_batches("mlp", m, FED_LOSS_SOFTMAX_CE, 0.1f, NULL);
    fed_model_destroy(&m);
    /* sigmoid and a bias-free layer; BCE then MSE on the same network. */
    m = model_from("{\"input\":[5],\"layers\":[{\"type\":\"linear\",\"out\":6,\"bias\":false},"
                   "{\"type\":\"sigmoid\"},{\"type\":\"linear\",\"out\":4,\"init\":\"torch\"},"
                   "{\"type\":\"gelu\"},{\"type\":\"linear\",\"out\":2,\"init\":\"xavier\"}]}",
                   2);
    check_model_batches("mlp-bce", m, FED_LOSS_BCE, 0.0f, NULL);
    check_model_batches("mlp-mse", m, FED_LOSS_MSE, 0.0f, NULL);
    fed_model_destroy(&m);
}

TEST(cnn_gradients) {
    /* conv (pad 1), relu, maxpool, strided conv, globalavgpool, flatten, linear on a
     * non-square input: (2,9,8) -> (3,9,8) -> (3,4,4) -> (4,2,2) -> (4) -> (3). */
    fed_model *m = model_from(
        "{\"input\":[2,9,8],\"layers\":[{\"type\":\"conv2d\",\"out\":3,\"k\":3,\"pad\":1},"
        "{\"type\":\"relu\"},{\"type\":\"maxpool2d\",\"k\":2},"
        "{\"type\":\"conv2d\",\"out\":4,\"k\":3,\"stride\":2,\"pad\":1},"
        "{\"type\":\"globalavgpool\"},{\"type\":\"flatten\"},{\"type\":\"linear\",\"out\":3}]}",
        3);
    check_model_batches("cnn", m, FED_LOSS_SOFTMAX_CE, 0.0f, NULL);
    fed_model_destroy(&m);
    /* conv (stride 2, pad 2), gelu, overlapping avgpool, 1x1 conv, relu, maxpool,
     * flatten, linear; MSE: (1,7,7) -> (3,5,5) -> (3,4,4) -> (2,4,4) -> (2,2,2) -> (8) -> (4). */
    m = model_from("{\"input\":[1,7,7],\"layers\":["
                   "{\"type\":\"conv2d\",\"out\":3,\"k\":3,\"stride\":2,\"pad\":2},"
                   "{\"type\":\"gelu\"},{\"type\":\"avgpool2d\",\"k\":2,\"stride\":1},"
                   "{\"type\":\"conv2d\",\"out\":2,\"k\":1},{\"type\":\"relu\"},"
                   "{\"type\":\"maxpool2d\",\"k\":2},{\"type\":\"flatten\"},"
                   "{\"type\":\"linear\",\"out\":4}]}",
                   4);
    check_model_batches("cnn2", m, FED_LOSS_MSE, 0.0f, NULL);
    fed_model_destroy(&m);
    /* Two 5x5 pad-2 convolutions on an odd-sized input; the second (8 -> 8 channels)
     * runs by Winograd (model.c: C, OC >= 8), its input gradient feeding the first's
     * weight gradient: (2,7,5) -> (8,7,5) -> (8,7,5) -> (8) -> (3). */
    m = model_from("{\"input\":[2,7,5],\"layers\":["
                   "{\"type\":\"conv2d\",\"out\":8,\"k\":5,\"pad\":2},{\"type\":\"relu\"},"
                   "{\"type\":\"conv2d\",\"out\":8,\"k\":5,\"pad\":2},"
                   "{\"type\":\"globalavgpool\"},{\"type\":\"flatten\"},"
                   "{\"type\":\"linear\",\"out\":3}]}",
                   6);
    check_model_batches("cnn-wino", m, FED_LOSS_SOFTMAX_CE, 0.0f, NULL);
    fed_model_destroy(&m);
}

TEST(embedding_model_gradients) {
    /* Token ids with repeats; a linear applied per position before flattening. */
    const float ids[15] = {1, 3, 1, 6, 0, 3, 3, 2, 5, 1, 0, 0, 4, 6, 6};
    fed_model *m = model_from("{\"input\":[5],\"layers\":["
                              "{\"type\":\"embedding\",\"vocab\":7,\"dim\":4},"
                              "{\"type\":\"layernorm\"},{\"type\":\"linear\",\"out\":3},"
                              "{\"type\":\"tanh\"},{\"type\":\"flatten\"},"
                              "{\"type\":\"linear\",\"out\":2}]}",
                              5);
    check_model_batches("embed", m, FED_LOSS_SOFTMAX_CE, 0.0f, ids);
    fed_model_destroy(&m);
}

TEST(transformer_gradients) {
    /* Padded sequences of lengths 3, 5 and 1 (T = 5): a padded embedding, sinusoidal
     * positions, a pre-norm attention block whose skip path is a projection (8 -> 6), a
     * feed-forward block, a causal attention block without biases, masked mean pooling,
     * then a head. Batch 1 runs at length 3, batch 3 at 5. */
    const float ids[15] = {1, 3, 8, -1, -1, 2, 2, 5, 7, 0, 4, -1, -1, -1, -1};
    fed_model *m = model_from(
        "{\"input\":[5],\"layers\":["
        "{\"type\":\"embedding\",\"vocab\":9,\"dim\":8,\"pad\":true},"
        "{\"type\":\"positions\"},"
        "{\"type\":\"residual\",\"proj\":true,\"layers\":[{\"type\":\"layernorm\"},"
        "{\"type\":\"attention\",\"heads\":2,\"out\":6}]},"
        "{\"type\":\"residual\",\"layers\":[{\"type\":\"layernorm\"},"
        "{\"type\":\"linear\",\"out\":10},{\"type\":\"gelu\"},{\"type\":\"linear\",\"out\":6}]},"
        "{\"type\":\"residual\",\"name\":\"causal\",\"layers\":[{\"type\":\"attention\","
        "\"heads\":3,\"causal\":true,\"bias\":false}]},"
        "{\"type\":\"meanpool\"},{\"type\":\"linear\",\"out\":4},{\"type\":\"tanh\"},"
        "{\"type\":\"linear\",\"out\":3}]}",
        9);
    if (m) {
        CHECK(fed_model_find(m, "2.proj.weight") && fed_model_find(m, "2.1.qkv.weight"));
        CHECK(fed_model_find(m, "causal.0.out.weight") && !fed_model_find(m, "causal.0.out.bias"));
    }
    check_model_batches("transformer", m, FED_LOSS_SOFTMAX_CE, 0.0f, ids);
    /* Only the upper blocks trainable: backward stops inside the stack. */
    if (m) {
        CHECK_SIZE(fed_model_set_trainable_glob(m, "*", false), fed_model_num_tensors(m));
        CHECK(fed_model_set_trainable_glob(m, "causal.*", true) == 2);
        CHECK(fed_model_set_trainable_glob(m, "8.*", true) == 2);
    }
    check_model_batches("transformer-top", m, FED_LOSS_SOFTMAX_CE, 0.0f, ids);
    fed_model_destroy(&m);
    /* Learned positions, post-norm blocks, l2norm, unpadded (T, D) input from an
     * ordinary embedding: every position is valid. */
    const float full[12] = {0, 1, 2, 3, 3, 2, 1, 0, 1, 1, 2, 2};
    m = model_from("{\"input\":[4],\"layers\":["
                   "{\"type\":\"embedding\",\"vocab\":4,\"dim\":6},"
                   "{\"type\":\"positions\",\"kind\":\"learned\"},"
                   "{\"type\":\"residual\",\"layers\":[{\"type\":\"attention\",\"heads\":2}]},"
                   "{\"type\":\"layernorm\"},{\"type\":\"meanpool\"},"
                   "{\"type\":\"l2norm\"},{\"type\":\"linear\",\"out\":2}]}",
                   10);
    check_model_batches("transformer-learned", m, FED_LOSS_SOFTMAX_CE, 0.0f, full);
    fed_model_destroy(&m);
}

TEST(lora_gradients) {
    /* Adapters on a linear layer, both attention weights and a residual projection,
     * jittered so that B is not zero; first everything trains, then only the adapters. */
    const float ids[15] = {1, 3, 8, -1, -1, 2, 2, 5, 7, 0, 4, -1, -1, -1, -1};
    fed_model *m = model_from(
        "{\"input\":[5],\"layers\":["
        "{\"type\":\"embedding\",\"vocab\":9,\"dim\":8,\"pad\":true},"
        "{\"type\":\"residual\",\"proj\":true,\"lora\":{\"rank\":2,\"alpha\":3},"
        "\"layers\":[{\"type\":\"layernorm\"},{\"type\":\"attention\",\"heads\":2,\"out\":6,"
        "\"lora\":{\"rank\":3,\"alpha\":6,\"on\":[\"qkv\",\"out\"]}}]},"
        "{\"type\":\"meanpool\"},{\"type\":\"linear\",\"out\":4,\"lora\":{\"rank\":2}},"
        "{\"type\":\"tanh\"},{\"type\":\"linear\",\"out\":3}]}",
        11);
    if (m) {
        CHECK(fed_model_find(m, "1.proj.lora_A") && fed_model_find(m, "1.1.qkv.lora_B"));
        CHECK(fed_model_find(m, "1.1.out.lora_A") && fed_model_find(m, "3.lora_B"));
    }
    check_model_batches("lora-all", m, FED_LOSS_SOFTMAX_CE, 0.0f, ids);
    if (m) {
        fed_model_set_trainable_glob(m, "*", false);
        CHECK_SIZE(fed_model_set_trainable_glob(m, "*lora_?", true), 8);
    }
    check_model_batches("lora-adapters", m, FED_LOSS_SOFTMAX_CE, 0.0f, ids);
    fed_model_destroy(&m);
    /* A 1x1 convolution with adapters between two plain ones. */
    m = model_from("{\"input\":[2,5,4],\"layers\":[{\"type\":\"conv2d\",\"out\":3,\"k\":3,"
                   "\"pad\":1},{\"type\":\"tanh\"},{\"type\":\"conv2d\",\"out\":4,\"k\":1,"
                   "\"lora\":{\"rank\":2,\"alpha\":4}},{\"type\":\"relu\"},{\"type\":\"flatten\"},"
                   "{\"type\":\"linear\",\"out\":3}]}",
                   12);
    if (m) CHECK(fed_model_find(m, "2.lora_A") && fed_model_find(m, "2.lora_B"));
    check_model_batches("lora-conv1x1", m, FED_LOSS_SOFTMAX_CE, 0.0f, NULL);
    if (m) {
        fed_model_set_trainable_glob(m, "*", false);
        CHECK_SIZE(fed_model_set_trainable_glob(m, "2.lora_?", true), 2);
    }
    check_model_batches("lora-conv1x1-adapters", m, FED_LOSS_SOFTMAX_CE, 0.0f, NULL);
    fed_model_destroy(&m);
}

/* The next-token loss on its own: logits (N, T, V) against the ids shifted by one. */
typedef struct ntcase {
    float *z;         /* (N, T, V) */
    const float *ids; /* (N, T) */
    size_t N, T, V;
} ntcase;

static double obj_next_token(void *p) {
    ntcase *c = p;
    size_t count, correct;
    return fed_next_token_ce(NULL, c->z, c->ids, c->N, c->T, c->V, &count, &correct);
}

TEST(next_token_loss) {
    /* Two sequences of T = 4 (lengths 4 and 2) over V = 3: positions 0..2 of the first
     * and position 0 of the second predict, 4 in all; the rest carry no gradient. */
    const float ids[8] = {0, 2, 1, 1, 2, 0, -1, -1};
    fed_rng r;
    fed_rng_seed(&r, 31);
    ntcase c = {uniform(24, &r, -3, 3), ids, 2, 4, 3};
    float *d = alloc_floats(24);
    size_t count = 0, correct = 0;
    double loss = fed_next_token_ce(d, c.z, ids, 2, 4, 3, &count, &correct);
    CHECK_SIZE(count, 4);
    CHECK_NEAR(loss, obj_next_token(&c), 0.0);
    CHECK(grad_ok("next_token N=2 T=4 V=3", c.z, d, 24, 1, obj_next_token, &c, EPS, TOL));
    for (int i = 9; i < 12; i++) CHECK(d[i] == 0.0f);  /* last position of sequence 0 */
    for (int i = 15; i < 24; i++) CHECK(d[i] == 0.0f); /* sequence 1 after its first token */
    /* In place: the gradient written over the logits is the same. */
    float *z2 = alloc_floats(24);
    memcpy(z2, c.z, 24 * sizeof(float));
    size_t count2, correct2;
    CHECK_NEAR(fed_next_token_ce(z2, z2, ids, 2, 4, 3, &count2, &correct2), loss, 0.0);
    CHECK(memcmp(z2, d, 24 * sizeof(float)) == 0 && count2 == 4 && correct2 == correct);
    /* Known values: logits [1 2 3] at both predicting positions of one sequence with next
     * ids 2 then 0: (0.40760596 + 2.40760596) / 2; arg-max hits the first only. */
    const float ids1[3] = {5, 2, 0};
    const float z1[9] = {1, 2, 3, 1, 2, 3, 9, 9, 9};
    float d1[9];
    CHECK_NEAR(fed_next_token_ce(d1, z1, ids1, 1, 3, 3, &count, &correct),
               (0.40760596 + 2.40760596) / 2.0, 1e-7);
    CHECK_SIZE(count, 2);
    CHECK_SIZE(correct, 1);
    CHECK_NEAR(d1[2], (0.66524096 - 1.0) / 2.0, 1e-7);
    CHECK_NEAR(d1[3], (0.09003057 - 1.0) / 2.0, 1e-7);
    CHECK(d1[6] == 0.0f && d1[8] == 0.0f);
    /* Nothing to predict (sequences of one token): loss 0, no gradient, count 0. */
    const float one[4] = {1, -1, -1, -1};
    CHECK_NEAR(fed_next_token_ce(d, c.z, one, 1, 4, 3, &count, &correct), 0.0, 0.0);
    CHECK_SIZE(count, 0);
    for (int i = 0; i < 12; i++) CHECK(d[i] == 0.0f);
    free(z2);
    free(d);
    free(c.z);
}

/* A tiny GPT: padded embedding, learned positions, a pre-norm causal attention block and
 * a GELU MLP block, a final layer norm and the lmhead tied to the embedding. */
#define TINY_GPT                                                                                   \
    "{\"input\":[5],\"layers\":["                                                                  \
    "{\"type\":\"embedding\",\"vocab\":9,\"dim\":8,\"pad\":true,\"name\":\"wte\"},"                \
    "{\"type\":\"positions\",\"kind\":\"learned\"},"                                               \
    "{\"type\":\"residual\",\"layers\":[{\"type\":\"layernorm\"},"                                 \
    "{\"type\":\"attention\",\"heads\":2,\"causal\":true}]},"                                      \
    "{\"type\":\"residual\",\"layers\":[{\"type\":\"layernorm\"},"                                 \
    "{\"type\":\"linear\",\"out\":16},{\"type\":\"gelu\"},{\"type\":\"linear\",\"out\":8}]},"      \
    "{\"type\":\"layernorm\"},{\"type\":\"lmhead\",\"tie\":\"wte\"}]}"

TEST(lmhead_gradients) {
    /* Lengths 3, 5 and 1 (T = 5): the last predicts nothing, the first two 2 and 4. */
    const float ids[15] = {1, 3, 8, -1, -1, 2, 2, 5, 7, 0, 4, -1, -1, -1, -1};
    fed_model *m = model_from(TINY_GPT, 13);
    if (m) {
        CHECK(fed_arch_is_lm(fed_model_arch(m)));
        CHECK_SIZE(fed_model_output_size(m), 5 * 9);
        CHECK(!fed_model_find(m, "6.weight")); /* the head has no tensor of its own */
    }
    check_model_batches("gpt", m, FED_LOSS_NEXT_TOKEN, 0.0f, ids);
    /* Only the tied table trains: its gradient comes from the head and the input. */
    if (m) {
        fed_model_set_trainable_glob(m, "*", false);
        CHECK_SIZE(fed_model_set_trainable_glob(m, "wte.weight", true), 1);
    }
    check_model_batches("gpt-table", m, FED_LOSS_NEXT_TOKEN, 0.0f, ids);
    /* The table frozen, the top block and the final norm trainable: the head passes the
     * gradient down without writing the frozen table's. */
    if (m) {
        fed_model_set_trainable_glob(m, "*", false);
        CHECK_SIZE(fed_model_set_trainable_glob(m, "3.*", true), 6);
        CHECK_SIZE(fed_model_set_trainable_glob(m, "4.*", true), 2);
    }
    check_model_batches("gpt-top", m, FED_LOSS_NEXT_TOKEN, 0.0f, ids);
    /* LoRA on attention and the MLP, the rest frozen (jittered so B is not zero). */
    fed_model *lora = NULL;
    if (m) CHECK_OK(fed_model_add_lora(&lora, m, 2, 4.0f, "*qkv*,*out*,3.*", SIZE_MAX, 3, NULL));
    if (lora) {
        fed_rng r;
        fed_rng_seed(&r, 14);
        for (size_t i = 0; i < fed_model_num_tensors(lora); i++) {
            const fed_tensor *t = fed_model_tensor(lora, i);
            if (!t->trainable) continue;
            for (size_t j = 0; j < t->numel; j++)
                fed_model_params(lora)[t->offset + j] += 0.2f * (fed_rng_uniform(&r) - 0.5f);
        }
        CHECK(fed_arch_is_lm(fed_model_arch(lora)));
    }
    check_model_batches("gpt-lora", lora, FED_LOSS_NEXT_TOKEN, 0.0f, ids);
    fed_model_destroy(&lora);
    fed_model_destroy(&m);
}

TEST(frozen_tensors_keep_their_gradient) {
    const char *spec = "{\"input\":[4],\"layers\":[{\"type\":\"linear\",\"out\":6},"
                       "{\"type\":\"layernorm\"},{\"type\":\"gelu\"},"
                       "{\"type\":\"linear\",\"out\":5},{\"type\":\"relu\"},"
                       "{\"type\":\"linear\",\"out\":3}]}";
    /* The bottom layer frozen: backward stops above it. */
    fed_model *m = model_from(spec, 7);
    if (!m) return;
    CHECK_SIZE(fed_model_set_trainable_glob(m, "0.*", false), 2);
    CHECK_SIZE(fed_model_num_trainable(m), fed_model_num_params(m) - (6 * 4 + 6));
    check_model_batches("frozen-bottom", m, FED_LOSS_SOFTMAX_CE, 0.0f, NULL);
    /* A middle tensor frozen: gradients still flow through it to layer 0. */
    CHECK_SIZE(fed_model_set_trainable_glob(m, "*", true), 8);
    CHECK_SIZE(fed_model_set_trainable_glob(m, "1.weight", false), 1);
    check_model_batches("frozen-middle", m, FED_LOSS_SOFTMAX_CE, 0.0f, NULL);
    /* Frozen by index: the head's bias, the last of 8 tensors. */
    CHECK_SIZE(fed_model_set_trainable_glob(m, "*", true), 8);
    CHECK_SIZE(fed_model_num_tensors(m), 8);
    CHECK_STR(fed_model_tensor(m, 7)->name, "5.bias");
    fed_model_set_trainable(m, 7, false);
    CHECK(!fed_model_find(m, "5.bias")->trainable);
    check_model_batches("frozen-head-bias", m, FED_LOSS_MSE, 0.0f, NULL);
    fed_model_destroy(&m);

    /* A frozen convolution between trainable ones: its input gradient still flows. */
    m = model_from("{\"input\":[1,6,5],\"layers\":[{\"type\":\"conv2d\",\"out\":2,\"k\":3,"
                   "\"pad\":1},{\"type\":\"tanh\"},{\"type\":\"conv2d\",\"out\":3,\"k\":2,"
                   "\"stride\":2},{\"type\":\"flatten\"},{\"type\":\"linear\",\"out\":2}]}",
                   8);
    if (!m) return;
    CHECK_SIZE(fed_model_set_trainable_glob(m, "2.*", false), 2);
    check_model_batches("frozen-conv", m, FED_LOSS_SOFTMAX_CE, 0.0f, NULL);
    fed_model_destroy(&m);
}

int main(void) {
    RUN(linear_backward);
    RUN(conv2d_backward);
    RUN(pooling_backward);
    RUN(activations_backward);
    RUN(dropout_backward);
    RUN(layernorm_backward);
    RUN(embedding_backward);
    RUN(losses_backward);
    RUN(losses_known_values);
    RUN(mlp_gradients);
    RUN(cnn_gradients);
    RUN(embedding_model_gradients);
    RUN(transformer_gradients);
    RUN(lora_gradients);
    RUN(frozen_tensors_keep_their_gradient);
    RUN(next_token_loss);
    RUN(lmhead_gradients);
    fprintf(stderr, "worst relative error of any finite-difference check: %.3g\n", worst_seen_);
    return test_report();
}
