/* The streaming aggregator and the server strategies: weighted means checked bit for bit
 * against exact references, independence from chunk boundaries, every way an update is
 * rejected (and that a rejected update never touches the sum or the other slots), the
 * round lifecycle, strategy steps against values worked out by hand, checkpoint state
 * round trips, configuration errors and allocation failures. */
#include "coordinator/aggregate.h"
#include "core/alloc_internal.h"
#include "core/rng.h"
#include "tests/test.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define P 37 /* odd on purpose: vector loops have tails */

/* Update k of the exact test: multiples of 1/8 in [-5/8, 5/8]. Weights 1, 2, 5 sum to
 * 8, so every product, partial sum and the final division are exact in float. */
static const float exact_w[3] = {1, 2, 5};
static float exact_value(int k, size_t i) {
    return (float)((int)((i * 3 + (size_t)k * 5) % 11) - 5) * 0.125f;
}

static void exact_update(int k, float *d) {
    for (size_t i = 0; i < P; i++) d[i] = exact_value(k, i);
}

/* Writes d[0..P) into slot in chunks of `chunk` values (the last one shorter). */
static fed_err feed(fed_agg *a, fed_agg_slot s, const float *d, size_t chunk) {
    for (size_t off = 0; off < P; off += chunk) {
        size_t n = P - off < chunk ? P - off : chunk;
        fed_err err = fed_agg_slot_write(a, s, off, d + off, n);
        if (err) return err;
    }
    return FED_OK;
}

/* Opens, writes in chunks and commits one whole update. */
static fed_err fold(fed_agg *a, const float *d, float w, size_t chunk) {
    fed_agg_slot s;
    fed_err err = fed_agg_slot_open(a, &s, w);
    if (!err) err = feed(a, s, d, chunk);
    if (!err) err = fed_agg_slot_commit(a, s, 0.0);
    return err;
}

TEST(weighted_mean_exact) {
    float d[3][P], ref[P];
    for (int k = 0; k < 3; k++) exact_update(k, d[k]);
    /* The reference in double: sum_k w_k d_k / 8, exact, hence equal to the float. */
    for (size_t i = 0; i < P; i++) {
        double s = 0.0;
        for (int k = 0; k < 3; k++) s += (double)exact_w[k] * (double)d[k][i];
        ref[i] = (float)(s / 8.0);
    }
    /* By hand, element 0: the updates hold -5/8, 0 and 5/8, so the mean is
     * (1 * -0.625 + 2 * 0 + 5 * 0.625) / 8 = 2.5 / 8 = 0.3125. */
    CHECK(ref[0] == 0.3125f);

    const size_t chunks[] = {P, 1, 3, 8, 36};
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        fed_agg *a = NULL;
        CHECK_OK(fed_agg_new(&a, P, 1));
        if (!a) return;
        for (int k = 0; k < 3; k++) CHECK_OK(fold(a, d[k], exact_w[k], chunks[c]));
        fed_agg_stats st = fed_agg_get_stats(a);
        CHECK_SIZE(st.accepted, 3);
        CHECK_SIZE(st.rejected, 0);
        CHECK(st.weight == 8.0);
        const float *mean = NULL;
        CHECK_OK(fed_agg_result(a, &mean));
        if (mean) CHECK_MEM(mean, ref, sizeof ref);
        CHECK(fed_agg_get_stats(a).closed);
        fed_agg_destroy(&a);
        CHECK(a == NULL);
    }
}

/* Random (inexact) values: the sum depends on the commit order only, never on how the
 * updates were cut into chunks or interleaved. */
TEST(chunk_boundaries_bit_identical) {
    float d[3][P];
    const float w[3] = {600, 17, 250.5f};
    fed_rng r = fed_rng_stream(7, 1);
    for (int k = 0; k < 3; k++)
        for (size_t i = 0; i < P; i++) d[k][i] = fed_rng_normal(&r);

    fed_agg *ref = NULL;
    CHECK_OK(fed_agg_new(&ref, P, 1));
    if (!ref) return;
    for (int k = 0; k < 3; k++) CHECK_OK(fold(ref, d[k], w[k], P));

    for (int trial = 0; trial < 20; trial++) {
        fed_agg *a = NULL;
        CHECK_OK(fed_agg_new(&a, P, 3));
        if (!a) break;
        /* All three open at once, written in random interleaved chunks. */
        fed_agg_slot s[3];
        size_t done[3] = {0};
        for (int k = 0; k < 3; k++) CHECK_OK(fed_agg_slot_open(a, &s[k], w[k]));
        while (done[0] < P || done[1] < P || done[2] < P) {
            int k = (int)fed_rng_below(&r, 3);
            if (done[k] == P) continue;
            size_t n = 1 + (size_t)fed_rng_below(&r, 12);
            if (n > P - done[k]) n = P - done[k];
            CHECK_OK(fed_agg_slot_write(a, s[k], done[k], d[k] + done[k], n));
            done[k] += n;
        }
        for (int k = 0; k < 3; k++) CHECK_OK(fed_agg_slot_commit(a, s[k], 0.0));
        CHECK_MEM(fed_agg_sum(a), fed_agg_sum(ref), P * sizeof(float));
        fed_agg_destroy(&a);
    }
    /* A zero-length chunk is accepted and changes nothing. */
    fed_agg_slot s;
    fed_agg *a = NULL;
    CHECK_OK(fed_agg_new(&a, P, 1));
    if (a) {
        CHECK_OK(fed_agg_slot_open(a, &s, 1));
        CHECK_OK(fed_agg_slot_write(a, s, 0, NULL, 0));
        CHECK_OK(feed(a, s, d[0], 10));
        CHECK_OK(fed_agg_slot_write(a, s, P, NULL, 0));
        CHECK_OK(fed_agg_slot_commit(a, s, 0.0));
        CHECK_MEM(fed_agg_sum(a), d[0], sizeof d[0]);
    }
    fed_agg_destroy(&a);
    fed_agg_destroy(&ref);
}

/* Every way an update is rejected, each time with a good update open in another slot:
 * the sum stays bit-for-bit as it was, the good update lands as if alone. */
TEST(rejections_leave_sum_untouched) {
    float d[3][P], bad[P], snap[P];
    for (int k = 0; k < 3; k++) exact_update(k, d[k]);
    fed_agg *a = NULL, *clean = NULL;
    CHECK_OK(fed_agg_new(&a, P, 2));
    CHECK_OK(fed_agg_new(&clean, P, 1));
    if (!a || !clean) goto done;
    CHECK_OK(fold(clean, d[0], 1, P));
    CHECK_OK(fold(clean, d[1], 2, P));

    CHECK_OK(fold(a, d[0], 1, P));
    memcpy(snap, fed_agg_sum(a), sizeof snap);
    fed_agg_slot good, s;
    CHECK_OK(fed_agg_slot_open(a, &good, 2));
    CHECK_OK(fed_agg_slot_write(a, good, 0, d[1], 5)); /* the good one, in pieces */
    size_t good_done = 5;

    /* 1. NaN in the last chunk. */
    memcpy(bad, d[2], sizeof bad);
    bad[P - 1] = NAN;
    CHECK_OK(fed_agg_slot_open(a, &s, 5));
    CHECK_OK(fed_agg_slot_write(a, s, 0, bad, 20));
    CHECK_OK(fed_agg_slot_write(a, good, good_done, d[1] + good_done, 10));
    good_done += 10;
    CHECK_ERR(fed_agg_slot_write(a, s, 20, bad + 20, P - 20), FED_ENONFINITE);
    CHECK_STR(fed_errmsg(), "value 36 is nan");
    CHECK_SIZE(fed_agg_get_stats(a).open, 1); /* its slot is free again */
    CHECK_ERR(fed_agg_slot_commit(a, s, 0.0), FED_ECANCELED);
    CHECK_ERR(fed_agg_slot_write(a, s, P, bad, 0), FED_ECANCELED);
    CHECK_MEM(fed_agg_sum(a), snap, sizeof snap);

    /* 2. Infinity in the middle. */
    memcpy(bad, d[2], sizeof bad);
    bad[20] = -INFINITY;
    CHECK_OK(fed_agg_slot_open(a, &s, 5));
    CHECK_ERR(feed(a, s, bad, 16), FED_ENONFINITE);
    CHECK_STR(fed_errmsg(), "value 20 is infinite");
    CHECK_MEM(fed_agg_sum(a), snap, sizeof snap);

    /* 3. A short update. */
    CHECK_OK(fed_agg_slot_open(a, &s, 5));
    CHECK_OK(fed_agg_slot_write(a, s, 0, d[2], 30));
    CHECK_ERR(fed_agg_slot_commit(a, s, 0.0), FED_EFORMAT);
    CHECK_STR(fed_errmsg(), "update has 30 of 37 values");
    CHECK_MEM(fed_agg_sum(a), snap, sizeof snap);

    /* 4. A long one, and one out of order. */
    CHECK_OK(fed_agg_slot_open(a, &s, 5));
    CHECK_OK(fed_agg_slot_write(a, s, 0, d[2], 30));
    CHECK_ERR(fed_agg_slot_write(a, s, 30, d[2], 8), FED_EFORMAT);
    CHECK_STR(fed_errmsg(), "chunk of 8 values at 30 runs past the 37-value update");
    CHECK_OK(fed_agg_slot_open(a, &s, 5));
    CHECK_OK(fed_agg_slot_write(a, s, 0, d[2], 10));
    CHECK_ERR(fed_agg_slot_write(a, s, 12, d[2] + 12, 4), FED_EFORMAT);
    CHECK_STR(fed_errmsg(), "chunk at value 12, expected 10 (out of order)");
    CHECK_MEM(fed_agg_sum(a), snap, sizeof snap);

    /* 5. Norm above the bound: [3, 4, 0...] has norm 5; equal to the bound passes
     * (checked in norm_bound below). */
    memset(bad, 0, sizeof bad);
    bad[0] = 3;
    bad[1] = 4;
    CHECK_OK(fed_agg_slot_open(a, &s, 5));
    CHECK_OK(feed(a, s, bad, 7));
    CHECK_ERR(fed_agg_slot_commit(a, s, 4.5), FED_ERANGE);
    CHECK_STR(fed_errmsg(), "norm 5 above the bound 4.5");
    CHECK_MEM(fed_agg_sum(a), snap, sizeof snap);

    /* 6. A bad bound is the caller's mistake, but the update is still dropped. */
    CHECK_OK(fed_agg_slot_open(a, &s, 5));
    CHECK_OK(feed(a, s, bad, P));
    CHECK_ERR(fed_agg_slot_commit(a, s, -1.0), FED_EINVAL);
    CHECK_ERR(fed_agg_slot_commit(a, s, 0.0), FED_ECANCELED);

    /* 7. Finite but so large that w x d would overflow the float sum. */
    bad[0] = 1e30f;
    CHECK_OK(fed_agg_slot_open(a, &s, 1e10f));
    CHECK_OK(feed(a, s, bad, P));
    CHECK_ERR(fed_agg_slot_commit(a, s, 0.0), FED_ERANGE);
    CHECK_CONTAINS(fed_errmsg(), "would overflow the float sum");
    CHECK_MEM(fed_agg_sum(a), snap, sizeof snap);

    /* 8. The caller's own verdict (a digest mismatch): abort. Twice is harmless. */
    CHECK_OK(fed_agg_slot_open(a, &s, 5));
    CHECK_OK(feed(a, s, d[2], P));
    fed_agg_slot_abort(a, s);
    fed_agg_slot_abort(a, s);
    fed_agg_slot_abort(a, FED_AGG_NO_SLOT);
    CHECK_ERR(fed_agg_slot_commit(a, s, 0.0), FED_ECANCELED);
    CHECK_MEM(fed_agg_sum(a), snap, sizeof snap);

    fed_agg_stats st = fed_agg_get_stats(a);
    CHECK_SIZE(st.accepted, 1);
    CHECK_SIZE(st.rejected, 9);
    CHECK_SIZE(st.open, 1);
    CHECK(st.weight == 1.0);

    /* The good update, finished after all that, lands exactly as without the others. */
    CHECK_OK(fed_agg_slot_write(a, good, good_done, d[1] + good_done, P - good_done));
    CHECK_OK(fed_agg_slot_commit(a, good, 0.0));
    CHECK_MEM(fed_agg_sum(a), fed_agg_sum(clean), P * sizeof(float));
    CHECK_SIZE(fed_agg_get_stats(a).accepted, 2);
done:
    fed_agg_destroy(&a);
    fed_agg_destroy(&clean);
}

TEST(norm_bound) {
    float d[P] = {3, 4};
    fed_agg *a = NULL;
    CHECK_OK(fed_agg_new(&a, P, 1));
    if (!a) return;
    fed_agg_slot s;
    CHECK_OK(fed_agg_slot_open(a, &s, 2));
    CHECK_OK(feed(a, s, d, 2));
    CHECK_OK(fed_agg_slot_commit(a, s, 5.0)); /* norm 5 == bound: accepted */
    CHECK(fed_agg_sum(a)[0] == 6.0f && fed_agg_sum(a)[1] == 8.0f);
    CHECK_OK(fed_agg_slot_open(a, &s, 2));
    CHECK_OK(feed(a, s, d, P));
    CHECK_ERR(fed_agg_slot_commit(a, s, 4.999), FED_ERANGE);
    fed_agg_destroy(&a);
}

/* DP clipping: an update above the bound is folded scaled to it (and counted), one
 * within it exactly as given; the mean follows. */
TEST(dp_clip) {
    float big[P] = {3, 4}, small[P] = {0.3f, 0.4f};
    fed_agg *a = NULL;
    CHECK_OK(fed_agg_new(&a, P, 1));
    if (!a) return;
    fed_agg_set_clip(a, 1.0);
    CHECK_OK(fold(a, big, 1, P));   /* norm 5 -> scaled by 1/5: (0.6, 0.8) */
    CHECK_OK(fold(a, small, 1, 1)); /* norm 0.5: untouched */
    fed_agg_stats st = fed_agg_get_stats(a);
    CHECK_SIZE(st.accepted, 2);
    CHECK_SIZE(st.clipped, 1);
    CHECK_NEAR(fed_agg_sum(a)[0], 0.9, 1e-6);
    CHECK_NEAR(fed_agg_sum(a)[1], 1.2, 1e-6);
    for (size_t i = 2; i < P; i++) CHECK(fed_agg_sum(a)[i] == 0.0f);
    const float *mean = NULL;
    CHECK_OK(fed_agg_result(a, &mean));
    if (mean) CHECK_NEAR(mean[1], 0.6, 1e-6);
    /* The next round counts afresh; clip 0 turns it off. */
    fed_agg_begin_round(a);
    fed_agg_set_clip(a, 0.0);
    CHECK_OK(fold(a, big, 1, P));
    CHECK_SIZE(fed_agg_get_stats(a).clipped, 0);
    CHECK(fed_agg_sum(a)[0] == 3.0f && fed_agg_sum(a)[1] == 4.0f);
    fed_agg_destroy(&a);
}

TEST(slots_and_weights) {
    float d[P];
    exact_update(0, d);
    fed_agg *a = NULL;
    CHECK_OK(fed_agg_new(&a, P, 2));
    if (!a) return;
    fed_agg_slot s1, s2, s3;
    CHECK_OK(fed_agg_slot_open(a, &s1, 1));
    CHECK_OK(fed_agg_slot_open(a, &s2, 1));
    CHECK(s1 != s2 && s1 != FED_AGG_NO_SLOT);
    CHECK_ERR(fed_agg_slot_open(a, &s3, 1), FED_EAGAIN);
    CHECK_STR(fed_errmsg(), "all 2 update slots are busy");
    CHECK(s3 == FED_AGG_NO_SLOT);
    CHECK_OK(feed(a, s1, d, P));
    CHECK_OK(fed_agg_slot_commit(a, s1, 0.0));
    CHECK_OK(fed_agg_slot_open(a, &s3, 1)); /* reuses s1's slot under a new handle */
    CHECK(s3 != s1);
    CHECK_ERR(fed_agg_slot_write(a, s1, 0, d, 1), FED_ECANCELED);
    CHECK_ERR(fed_agg_slot_open(a, &s1, 1), FED_EAGAIN);
    fed_agg_slot_abort(a, s2);
    fed_agg_slot_abort(a, s3);
    CHECK_SIZE(fed_agg_get_stats(a).open, 0);

    /* 2^64 - 1 examples (what a lying site may claim) is above 2^53: refused. */
    const double bad_w[] = {0.0, -1.0, NAN, 18446744073709551615.0, INFINITY};
    for (size_t i = 0; i < 5; i++) CHECK_ERR(fed_agg_slot_open(a, &s1, bad_w[i]), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "update weight inf: must be in (0, 2^53]");
    CHECK_OK(fed_agg_slot_open(a, &s1, FED_AGG_WEIGHT_MAX));
    fed_agg_slot_abort(a, s1);
    CHECK_SIZE(fed_agg_get_stats(a).open, 0);
    CHECK_SIZE(fed_agg_get_stats(a).rejected, 3); /* the 2^53 one was aborted */
    CHECK_ERR(fed_agg_slot_write(a, (fed_agg_slot)1 << 40 | 63, 0, d, 1), FED_ECANCELED);
    fed_agg_destroy(&a);
}

TEST(round_lifecycle) {
    float d[P];
    exact_update(1, d);
    fed_agg *a = NULL;
    CHECK_OK(fed_agg_new(&a, P, 2));
    if (!a) return;
    CHECK_SIZE(fed_agg_size(a), P);
    const float *mean = (const float *)1;
    fed_agg_slot s, late;
    CHECK_OK(fed_agg_slot_open(a, &s, 1));
    fed_agg_slot_abort(a, s);
    CHECK_ERR(fed_agg_result(a, &mean), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "no update accepted this round (1 rejected)");
    CHECK(mean == NULL);
    CHECK(!fed_agg_get_stats(a).closed); /* still collecting */

    CHECK_OK(fold(a, d, 4, 5));
    CHECK_OK(fed_agg_slot_open(a, &late, 1));
    CHECK_OK(fed_agg_slot_write(a, late, 0, d, 3));
    CHECK_OK(fed_agg_result(a, &mean));
    CHECK(mean == fed_agg_sum(a));
    if (mean) CHECK_MEM(mean, d, sizeof d); /* one update: the mean is the update */
    fed_agg_stats st = fed_agg_get_stats(a);
    CHECK_SIZE(st.rejected, 2); /* the late one counts */
    CHECK_SIZE(st.open, 0);
    CHECK(st.closed);
    CHECK_ERR(fed_agg_slot_write(a, late, 3, d + 3, 3), FED_ECANCELED);
    CHECK_ERR(fed_agg_slot_open(a, &s, 1), FED_ECANCELED);
    CHECK_STR(fed_errmsg(), "update refused: the round is closed");
    const float *again = NULL;
    CHECK_OK(fed_agg_result(a, &again));
    CHECK(again == mean);
    if (again) CHECK_MEM(again, d, sizeof d); /* not scaled twice */

    /* A new round forgets everything, including an update still open. */
    fed_agg_begin_round(a);
    CHECK_OK(fed_agg_slot_open(a, &s, 1));
    fed_agg_begin_round(a);
    CHECK_ERR(fed_agg_slot_write(a, s, 0, d, 1), FED_ECANCELED);
    st = fed_agg_get_stats(a);
    CHECK(st.accepted == 0 && st.rejected == 0 && st.open == 0 && st.weight == 0.0 && !st.closed);
    for (size_t i = 0; i < P; i++) CHECK(fed_agg_sum(a)[i] == 0.0f);
    CHECK_OK(fold(a, d, 2, P));
    CHECK_OK(fed_agg_result(a, &mean));
    if (mean) CHECK_MEM(mean, d, sizeof d);
    fed_agg_destroy(&a);
    fed_agg_destroy(&a); /* NULL-safe */
    fed_agg_destroy(NULL);
}

TEST(agg_new_errors_and_oom) {
    fed_agg *a = (fed_agg *)1;
    CHECK_ERR(fed_agg_new(&a, 0, 1), FED_EINVAL);
    CHECK(a == NULL);
    CHECK_ERR(fed_agg_new(&a, P, 0), FED_EINVAL);
    CHECK_ERR(fed_agg_new(&a, P, FED_AGG_MAX_SLOTS + 1), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "aggregator: slots 65: must be in [1, 64]");
    CHECK_ERR(fed_agg_new(&a, SIZE_MAX / 2, 1), FED_ENOMEM);
    CHECK(a == NULL);
    FOR_EACH_ALLOC_FAILURE(f) {
        ALLOC_TRY(f, fed_agg_new(&a, P, 3));
        if (f.failed) {
            CHECK(a == NULL);
            continue;
        }
        float d[P];
        exact_update(0, d);
        CHECK_OK(fold(a, d, 1, 4)); /* a survivor works */
        fed_agg_destroy(&a);
    }
}

/* ---- strategies ------------------------------------------------------------------------ */

static void set3(float *p, float a, float b, float c) {
    p[0] = a;
    p[1] = b;
    p[2] = c;
}

#define CHECK3_EQ(v, a, b, c) CHECK((v)[0] == (a) && (v)[1] == (b) && (v)[2] == (c))
#define CHECK3_NEAR(v, a, b, c)                                                                    \
    do {                                                                                           \
        CHECK_NEAR((v)[0], a, 1e-6);                                                               \
        CHECK_NEAR((v)[1], b, 1e-6);                                                               \
        CHECK_NEAR((v)[2], c, 1e-6);                                                               \
    } while (0)

/* The three means the strategy tests feed, one per round. */
static const float means[3][3] = {{1, -2, 0}, {0.5f, 1, 0}, {-1, 0, 2}};

static fed_strategy *strategy3(fed_strategy_config c) {
    fed_strategy *s = NULL;
    CHECK_OK(fed_strategy_new(&s, &c, 3));
    return s;
}

/* The state buffer named name, or NULL. */
static const float *state_buf(const fed_strategy *s, const char *name) {
    fed_strategy_header h;
    const float *bufs[FED_STRATEGY_MAX_BUFS];
    const char *names[FED_STRATEGY_MAX_BUFS];
    fed_strategy_state(s, &h, bufs, names);
    for (uint32_t i = 0; i < h.nbufs; i++)
        if (strcmp(names[i], name) == 0) return bufs[i];
    return NULL;
}

TEST(fedavg_and_fedavgm) {
    float w[3];
    fed_strategy_config c = fed_strategy_defaults(FED_STRATEGY_FEDAVG);
    CHECK(c.eta == 1.0f);
    c.eta = 0.5f;
    fed_strategy *s = strategy3(c);
    if (!s) return;
    set3(w, 1, 2, 3);
    fed_strategy_step(s, w, means[0]); /* w + 0.5 d = [1.5, 1, 3] */
    CHECK3_EQ(w, 1.5f, 1.0f, 3.0f);
    fed_strategy_step(s, w, means[1]); /* + [0.25, 0.5, 0] */
    CHECK3_EQ(w, 1.75f, 1.5f, 3.0f);
    CHECK_INT(fed_strategy_rounds(s), 2);
    fed_strategy_destroy(&s);

    c = fed_strategy_defaults(FED_STRATEGY_FEDAVGM);
    CHECK(c.momentum == 0.9f && c.eta == 1.0f);
    c.momentum = 0.5f;
    s = strategy3(c);
    if (!s) return;
    set3(w, 1, 2, 3);
    fed_strategy_step(s, w, means[0]); /* v = d1 = [1, -2, 0]; w = [2, 0, 3] */
    CHECK3_EQ(w, 2.0f, 0.0f, 3.0f);
    fed_strategy_step(s, w, means[1]); /* v = 0.5 v + d2 = [1, 0, 0]; w = [3, 0, 3] */
    CHECK3_EQ(w, 3.0f, 0.0f, 3.0f);
    fed_strategy_step(s, w, means[2]); /* v = [0.5, 0, 0] + [-1, 0, 2] = [-0.5, 0, 2] */
    CHECK3_EQ(w, 2.5f, 0.0f, 5.0f);
    const float *v = state_buf(s, "momentum");
    if (v) CHECK3_EQ(v, -0.5f, 0.0f, 2.0f);
    fed_strategy_destroy(&s);
}

/* b1 0.5, b2 0.75, tau 0.5, eta 0.25 from w = [1, 2, 3]; m0 = 0, v0 = tau^2 = 0.25. */
static fed_strategy_config adaptive_config(fed_strategy_kind kind) {
    fed_strategy_config c = fed_strategy_defaults(kind);
    c.beta1 = 0.5f;
    c.beta2 = 0.75f;
    c.tau = 0.5f;
    c.eta = 0.25f;
    return c;
}

TEST(fedadam_by_hand) {
    fed_strategy *s = strategy3(adaptive_config(FED_STRATEGY_FEDADAM));
    if (!s) return;
    float w[3];
    set3(w, 1, 2, 3);
    const float *v = state_buf(s, "v");
    if (v) CHECK3_EQ(v, 0.25f, 0.25f, 0.25f);
    /* Round 1, d = [1, -2, 0]: m = 0.5 d = [0.5, -1, 0];
     * v = 0.75 * 0.25 + 0.25 d^2 = [0.4375, 1.1875, 0.1875];
     * w0 = 1 + 0.25 * 0.5 / (sqrt(0.4375) + 0.5) = 1 + 0.125 / 1.1614378 = 1.1076252
     * w1 = 2 - 0.25 / (sqrt(1.1875) + 0.5) = 2 - 0.25 / 1.5897247 = 1.8427401 */
    fed_strategy_step(s, w, means[0]);
    CHECK3_NEAR(w, 1.1076252185, 1.8427400704, 3.0);
    const float *m = state_buf(s, "m");
    v = state_buf(s, "v");
    if (m && v) {
        CHECK3_EQ(m, 0.5f, -1.0f, 0.0f);
        CHECK3_EQ(v, 0.4375f, 1.1875f, 0.1875f);
    }
    /* Round 2, d = [0.5, 1, 0]: m = [0.5, 0, 0]; v = [0.390625, 1.140625, 0.140625];
     * w0 += 0.125 / (0.625 + 0.5) = 0.1111111 -> 1.2187363; m1 = 0: w1 unchanged. */
    fed_strategy_step(s, w, means[1]);
    CHECK3_NEAR(w, 1.2187363296, 1.8427400704, 3.0);
    /* Round 3, d = [-1, 0, 2]: m = [-0.25, 0, 1]; v2 = 0.75 * 0.140625 + 0.25 * 4 =
     * 1.10546875; w2 = 3 + 0.25 / (1.0514127 + 0.5) = 3.1611434. */
    fed_strategy_step(s, w, means[2]);
    CHECK3_NEAR(w, 1.1682053147, 1.8427400704, 3.1611434492);
    if (m && v) {
        CHECK3_EQ(m, -0.25f, 0.0f, 1.0f);
        CHECK3_EQ(v, 0.54296875f, 0.85546875f, 1.10546875f);
    }
    fed_strategy_destroy(&s);
}

TEST(fedyogi_by_hand) {
    fed_strategy *s = strategy3(adaptive_config(FED_STRATEGY_FEDYOGI));
    if (!s) return;
    float w[3];
    set3(w, 1, 2, 3);
    const float *m = state_buf(s, "m"), *v = state_buf(s, "v");
    /* Round 1, d^2 = [1, 4, 0]: v - d^2 = [-0.75, -3.75, 0.25], so v grows where d^2 is
     * larger: v = 0.25 + 0.25 d^2 = [0.5, 1.25, 0.25]; the third keeps 0.25 - 0.25*0.
     * w0 = 1 + 0.125 / (0.7071068 + 0.5) = 1.1035534; w1 = 2 - 0.25 / 1.6180340. */
    fed_strategy_step(s, w, means[0]);
    CHECK3_NEAR(w, 1.1035533906, 1.8454915028, 3.0);
    if (m && v) CHECK3_EQ(v, 0.5f, 1.25f, 0.25f);
    /* Round 2, d^2 = [0.25, 1, 0]: v > d^2 everywhere, so v shrinks by 0.25 d^2:
     * [0.4375, 1, 0.25].
     * m = [0.5, 0, 0]: w0 += 0.125 / (0.6614378 + 0.5) = 0.1076252. */
    fed_strategy_step(s, w, means[1]);
    CHECK3_NEAR(w, 1.2111786091, 1.8454915028, 3.0);
    if (m && v) CHECK3_EQ(v, 0.4375f, 1.0f, 0.25f);
    /* Round 3, d = [-1, 0, 2]: v = [0.4375 + 0.25, 1 - 0, 0.25 + 1] = [0.6875, 1, 1.25];
     * m = [-0.25, 0, 1]; w2 = 3 + 0.25 / (1.1180340 + 0.5) = 3.1545085. */
    fed_strategy_step(s, w, means[2]);
    CHECK3_NEAR(w, 1.1641562952, 1.8454915028, 3.1545084972);
    if (m && v) {
        CHECK3_EQ(m, -0.25f, 0.0f, 1.0f);
        CHECK3_EQ(v, 0.6875f, 1.0f, 1.25f);
    }
    fed_strategy_destroy(&s);

    /* sign(0) = 0: with v = d^2 = 0.25 exactly, v stays; m = 0.25,
     * w = 0.25 * 0.25 / (0.5 + 0.5) = 0.0625. */
    fed_strategy_config c = adaptive_config(FED_STRATEGY_FEDYOGI);
    CHECK_OK(fed_strategy_new(&s, &c, 1));
    if (!s) return;
    float w1 = 0.0f, half = 0.5f;
    fed_strategy_step(s, &w1, &half);
    CHECK(w1 == 0.0625f);
    v = state_buf(s, "v");
    if (v) CHECK(v[0] == 0.25f);
    fed_strategy_destroy(&s);
}

/* Random vectors of P values for the bit-identity tests. */
static void random_vec(fed_rng *r, float *x, float scale) {
    for (size_t i = 0; i < P; i++) x[i] = scale * fed_rng_normal(r);
}

/* Stepping in ranges equals stepping the whole vector, bit for bit. */
TEST(ranged_apply) {
    for (int kind = 0; kind < 4; kind++) {
        fed_strategy_config c = fed_strategy_defaults((fed_strategy_kind)kind);
        fed_strategy *whole = NULL, *parts = NULL;
        CHECK_OK(fed_strategy_new(&whole, &c, P));
        CHECK_OK(fed_strategy_new(&parts, &c, P));
        if (!whole || !parts) break;
        fed_rng r = fed_rng_stream(11, (uint64_t)kind);
        float w1[P], w2[P], d[P];
        random_vec(&r, w1, 1.0f);
        memcpy(w2, w1, sizeof w1);
        for (int round = 0; round < 3; round++) {
            random_vec(&r, d, 0.01f);
            fed_strategy_step(whole, w1, d);
            fed_strategy_apply(parts, 0, 10, w2, d);
            fed_strategy_apply(parts, 10, 0, w2 + 10, d + 10);
            fed_strategy_apply(parts, 10, P - 10, w2 + 10, d + 10);
            fed_strategy_end_round(parts);
        }
        CHECK_MEM(w1, w2, sizeof w1);
        CHECK_INT(fed_strategy_rounds(parts), 3);
        fed_strategy_destroy(&whole);
        fed_strategy_destroy(&parts);
    }
}

/* Two rounds, save, restore into a fresh strategy, one more round each: identical. */
TEST(state_round_trip) {
    for (int kind = 0; kind < 4; kind++) {
        fed_strategy_config c = fed_strategy_defaults((fed_strategy_kind)kind);
        fed_strategy *a = NULL, *b = NULL;
        CHECK_OK(fed_strategy_new(&a, &c, P));
        CHECK_OK(fed_strategy_new(&b, &c, P));
        if (!a || !b) break;
        fed_rng r = fed_rng_stream(12, (uint64_t)kind);
        float wa[P], wb[P], d[P];
        random_vec(&r, wa, 1.0f);
        for (int round = 0; round < 2; round++) {
            random_vec(&r, d, 0.01f);
            fed_strategy_step(a, wa, d);
        }
        memcpy(wb, wa, sizeof wa);

        /* "Write the checkpoint": copy the header and the buffers out. */
        fed_strategy_header h;
        const float *bufs[FED_STRATEGY_MAX_BUFS];
        const char *names[FED_STRATEGY_MAX_BUFS];
        fed_strategy_state(a, &h, bufs, names);
        CHECK_INT(h.kind, kind);
        CHECK_INT(h.nbufs, kind == 0 ? 0 : kind == 1 ? 1 : 2);
        CHECK_INT(h.n, P);
        CHECK_INT(h.rounds, 2);
        float saved[FED_STRATEGY_MAX_BUFS][P];
        const float *restore_bufs[FED_STRATEGY_MAX_BUFS] = {NULL, NULL};
        for (uint32_t i = 0; i < h.nbufs; i++) {
            memcpy(saved[i], bufs[i], sizeof saved[i]);
            restore_bufs[i] = saved[i];
        }
        if (kind == 1) CHECK_STR(names[0], "momentum");
        if (kind >= 2) CHECK(strcmp(names[0], "m") == 0 && strcmp(names[1], "v") == 0);

        CHECK_OK(fed_strategy_restore(b, &h, restore_bufs));
        CHECK_INT(fed_strategy_rounds(b), 2);
        random_vec(&r, d, 0.01f);
        fed_strategy_step(a, wa, d);
        fed_strategy_step(b, wb, d);
        CHECK_MEM(wa, wb, sizeof wa);
        fed_strategy_header ha, hb;
        const float *ba[FED_STRATEGY_MAX_BUFS], *bb[FED_STRATEGY_MAX_BUFS];
        fed_strategy_state(a, &ha, ba, names);
        fed_strategy_state(b, &hb, bb, names);
        CHECK_INT(hb.rounds, 3);
        for (uint32_t i = 0; i < ha.nbufs; i++) CHECK_MEM(ba[i], bb[i], P * sizeof(float));
        fed_strategy_destroy(&a);
        fed_strategy_destroy(&b);
    }
}

TEST(state_restore_errors) {
    fed_strategy_config c = fed_strategy_defaults(FED_STRATEGY_FEDYOGI);
    fed_strategy *s = NULL;
    CHECK_OK(fed_strategy_new(&s, &c, P));
    if (!s) return;
    float d[P], w[P] = {0}, m[P], v[P], snap_m[P], snap_v[P];
    fed_rng r = fed_rng_stream(13, 0);
    random_vec(&r, d, 0.1f);
    fed_strategy_step(s, w, d);
    fed_strategy_header h, good;
    const float *bufs[FED_STRATEGY_MAX_BUFS];
    const char *names[FED_STRATEGY_MAX_BUFS];
    fed_strategy_state(s, &good, bufs, names);
    memcpy(snap_m, bufs[0], sizeof snap_m);
    memcpy(snap_v, bufs[1], sizeof snap_v);
    memcpy(m, snap_m, sizeof m);
    memcpy(v, snap_v, sizeof v);
    const float *in[FED_STRATEGY_MAX_BUFS] = {m, v};

    h = good;
    h.kind = FED_STRATEGY_FEDADAM;
    CHECK_ERR(fed_strategy_restore(s, &h, in), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "strategy state is for fedadam, not fedyogi");
    h.kind = 9;
    CHECK_ERR(fed_strategy_restore(s, &h, in), FED_EFORMAT);
    h = good;
    h.nbufs = 1;
    CHECK_ERR(fed_strategy_restore(s, &h, in), FED_EFORMAT);
    h = good;
    h.n = P + 1;
    CHECK_ERR(fed_strategy_restore(s, &h, in), FED_ESHAPE);
    CHECK_STR(fed_errmsg(), "strategy state: 38 values per buffer, expected 37");
    h = good;
    h.rounds = 99;
    m[3] = NAN;
    CHECK_ERR(fed_strategy_restore(s, &h, in), FED_ENONFINITE);
    CHECK_STR(fed_errmsg(), "strategy state m: value 3 is nan");
    m[3] = 0;
    v[36] = INFINITY;
    CHECK_ERR(fed_strategy_restore(s, &h, in), FED_ENONFINITE);
    v[36] = -0.5f;
    CHECK_ERR(fed_strategy_restore(s, &h, in), FED_ERANGE);
    CHECK_STR(fed_errmsg(), "strategy state v: value 36 is -0.5 < 0");
    /* Nothing changed on any failure. */
    fed_strategy_state(s, &h, bufs, names);
    CHECK_INT(h.rounds, 1);
    CHECK_MEM(bufs[0], snap_m, sizeof snap_m);
    CHECK_MEM(bufs[1], snap_v, sizeof snap_v);
    fed_strategy_destroy(&s);
}

TEST(strategy_config) {
    fed_strategy_kind k;
    const char *names[] = {"fedavg", "fedavgm", "fedadam", "fedyogi"};
    for (int i = 0; i < 4; i++) {
        CHECK_OK(fed_strategy_parse(names[i], &k));
        CHECK_INT(k, i);
        CHECK_STR(fed_strategy_name(k), names[i]);
    }
    CHECK_ERR(fed_strategy_parse("fedprox", &k), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "strategy \"fedprox\": must be fedavg, fedavgm, fedadam or fedyogi");
    CHECK_STR(fed_strategy_name((fed_strategy_kind)7), "?");

    fed_strategy_config c = fed_strategy_defaults(FED_STRATEGY_FEDADAM);
    CHECK(c.eta == 0.01f && c.beta1 == 0.9f && c.beta2 == 0.99f && c.tau == 1e-3f);
    CHECK_OK(fed_strategy_config_check(&c));
    c.beta2 = 1.0f;
    CHECK_ERR(fed_strategy_config_check(&c), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "beta2 1: must be in [0, 1)");
    c = fed_strategy_defaults(FED_STRATEGY_FEDYOGI);
    c.beta1 = -0.1f;
    CHECK_ERR(fed_strategy_config_check(&c), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "beta1 -0.1: must be in [0, 1)");
    c = fed_strategy_defaults(FED_STRATEGY_FEDYOGI);
    c.tau = 0.0f;
    CHECK_ERR(fed_strategy_config_check(&c), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "tau 0: must be finite and > 0");
    c = fed_strategy_defaults(FED_STRATEGY_FEDAVGM);
    c.momentum = 1.0f;
    CHECK_ERR(fed_strategy_config_check(&c), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "momentum 1: must be in [0, 1)");
    c = fed_strategy_defaults(FED_STRATEGY_FEDAVG);
    c.momentum = 5.0f; /* not used by FedAvg: not checked */
    c.tau = -1.0f;
    CHECK_OK(fed_strategy_config_check(&c));
    c.eta = NAN;
    CHECK_ERR(fed_strategy_config_check(&c), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "eta nan: must be finite and > 0");
    c.kind = (fed_strategy_kind)4;
    CHECK_ERR(fed_strategy_config_check(&c), FED_EINVAL);

    fed_strategy *s = (fed_strategy *)1;
    c = fed_strategy_defaults(FED_STRATEGY_FEDAVG);
    c.eta = 0.0f;
    CHECK_ERR(fed_strategy_new(&s, &c, 3), FED_EINVAL);
    CHECK(s == NULL);
    c.eta = 1.0f;
    CHECK_ERR(fed_strategy_new(&s, &c, 0), FED_EINVAL);
    CHECK(s == NULL);
    fed_strategy_destroy(&s);
    fed_strategy_destroy(NULL);
}

TEST(strategy_new_oom) {
    for (int kind = 0; kind < 4; kind++) {
        fed_strategy_config c = fed_strategy_defaults((fed_strategy_kind)kind);
        FOR_EACH_ALLOC_FAILURE(f) {
            fed_strategy *s = NULL;
            ALLOC_TRY(f, fed_strategy_new(&s, &c, P));
            if (f.failed) {
                CHECK(s == NULL);
                continue;
            }
            float w[P] = {0}, d[P] = {1};
            fed_strategy_step(s, w, d);
            CHECK(w[0] > 0.0f);
            fed_strategy_destroy(&s);
        }
    }
}

/* The whole path a coordinator takes: aggregate in chunks, then the FedAvg step. */
TEST(aggregate_then_step) {
    float d[3][P], w[P], expect[P];
    for (int k = 0; k < 3; k++) exact_update(k, d[k]);
    fed_agg *a = NULL;
    fed_strategy *s = NULL;
    fed_strategy_config c = fed_strategy_defaults(FED_STRATEGY_FEDAVG);
    CHECK_OK(fed_agg_new(&a, P, 2));
    CHECK_OK(fed_strategy_new(&s, &c, P));
    if (!a || !s) goto done;
    for (int k = 0; k < 3; k++) CHECK_OK(fold(a, d[k], exact_w[k], 6));
    const float *mean = NULL;
    CHECK_OK(fed_agg_result(a, &mean));
    if (!mean) goto done;
    for (size_t i = 0; i < P; i++) {
        w[i] = (float)i;
        expect[i] =
            (float)i + (exact_value(0, i) + 2 * exact_value(1, i) + 5 * exact_value(2, i)) / 8.0f;
    }
    fed_strategy_step(s, w, mean);
    CHECK_MEM(w, expect, sizeof w);
done:
    fed_agg_destroy(&a);
    fed_strategy_destroy(&s);
}

/* Zero-copy receipt into a slot's buffer: the same sum as chunked writes, bit for bit;
 * a NaN, an infinity or a norm above the bound rejects the update without touching the
 * sum; a slot written by chunks cannot be taken as a buffer; stale handles. */
TEST(slot_buffer) {
    fed_agg *a = NULL, *b = NULL;
    CHECK_INT(fed_agg_new(&a, P, 2), FED_OK);
    CHECK_INT(fed_agg_new(&b, P, 2), FED_OK);
    if (!a || !b) goto done;
    float d[P];
    for (int k = 0; k < 3; k++) {
        exact_update(k, d);
        fed_agg_slot s;
        float *buf = NULL;
        CHECK_INT(fed_agg_slot_open(a, &s, exact_w[k]), FED_OK);
        CHECK_INT(fed_agg_slot_buffer(a, s, &buf), FED_OK);
        if (buf) memcpy(buf, d, sizeof d);
        CHECK_INT(fed_agg_slot_commit_buffer(a, s, 0.0), FED_OK);
        CHECK_INT(fold(b, d, exact_w[k], 5), FED_OK);
    }
    CHECK_MEM(fed_agg_sum(a), fed_agg_sum(b), sizeof d);
    float before[P];
    memcpy(before, fed_agg_sum(a), sizeof before);

    const float bad[3] = {NAN, INFINITY, 1e3f};
    const char *why[3] = {"is nan", "is infinite", "above the bound"};
    const fed_err code[3] = {FED_ENONFINITE, FED_ENONFINITE, FED_ERANGE};
    for (int k = 0; k < 3; k++) {
        fed_agg_slot s;
        float *buf = NULL;
        CHECK_INT(fed_agg_slot_open(a, &s, 1.0f), FED_OK);
        CHECK_INT(fed_agg_slot_buffer(a, s, &buf), FED_OK);
        if (!buf) continue;
        for (size_t i = 0; i < P; i++) buf[i] = 0.01f;
        buf[P - 2] = bad[k];
        CHECK_INT(fed_agg_slot_commit_buffer(a, s, 100.0), code[k]);
        CHECK_CONTAINS(fed_errmsg(), why[k]);
        CHECK_INT(fed_agg_slot_commit_buffer(a, s, 100.0), FED_ECANCELED);
        CHECK_INT(fed_agg_slot_buffer(a, s, &buf), FED_ECANCELED);
        CHECK(buf == NULL);
    }
    CHECK_MEM(fed_agg_sum(a), before, sizeof before);
    fed_agg_stats st = fed_agg_get_stats(a);
    CHECK_SIZE(st.accepted, 3);
    CHECK_SIZE(st.rejected, 3);
    CHECK_SIZE(st.open, 0);

    /* Chunks and a buffer do not mix. */
    fed_agg_slot s;
    float *buf = NULL;
    CHECK_INT(fed_agg_slot_open(a, &s, 1.0f), FED_OK);
    CHECK_INT(fed_agg_slot_write(a, s, 0, d, 3), FED_OK);
    CHECK_INT(fed_agg_slot_buffer(a, s, &buf), FED_EFORMAT);
    CHECK(buf == NULL);
    CHECK_INT(fed_agg_slot_commit_buffer(a, s, 0.0), FED_EFORMAT);
    CHECK_SIZE(fed_agg_get_stats(a).open, 0);
    /* Aborting a buffer slot frees it; the round's end invalidates open ones. */
    CHECK_INT(fed_agg_slot_open(a, &s, 1.0f), FED_OK);
    CHECK_INT(fed_agg_slot_buffer(a, s, &buf), FED_OK);
    fed_agg_slot_abort(a, s);
    CHECK_INT(fed_agg_slot_commit_buffer(a, s, 0.0), FED_ECANCELED);
    CHECK_INT(fed_agg_slot_open(a, &s, 1.0f), FED_OK);
    fed_agg_begin_round(a);
    CHECK_INT(fed_agg_slot_buffer(a, s, &buf), FED_ECANCELED);
    CHECK_MEM(fed_agg_sum(a), (float[P]){0}, sizeof before);
done:
    fed_agg_destroy(&a);
    fed_agg_destroy(&b);
}

int main(void) {
    RUN(weighted_mean_exact);
    RUN(chunk_boundaries_bit_identical);
    RUN(rejections_leave_sum_untouched);
    RUN(norm_bound);
    RUN(dp_clip);
    RUN(slots_and_weights);
    RUN(round_lifecycle);
    RUN(agg_new_errors_and_oom);
    RUN(fedavg_and_fedavgm);
    RUN(fedadam_by_hand);
    RUN(fedyogi_by_hand);
    RUN(ranged_apply);
    RUN(state_round_trip);
    RUN(state_restore_errors);
    RUN(strategy_config);
    RUN(strategy_new_oom);
    RUN(aggregate_then_step);
    RUN(slot_buffer);
    return test_report();
}
