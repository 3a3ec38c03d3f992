/* dataset/moments.h: the federation's input statistics summed exactly in limbs. Sites with
 * very different scales sum to the pooled data's mean and variance (fed_std_moments of
 * the concatenation) to 1e-9 relative, in any order and grouping bit for bit; the
 * secure sum's fixed-point form gives the same totals; malformed vectors and values
 * out of range are refused naming the index. */
#include "core/alloc.h"
#include "dataset/dataset.h"
#include "dataset/moments.h"
#include "core/rng.h"
#include "tests/test.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

/* n examples of dim features: feature j ~ offset + scale x N(j, 1). */
static fed_dataset *gauss(size_t n, size_t dim, double offset, double scale, uint64_t seed) {
    fed_dataset *d = NULL;
    if (fed_data_new(&d, n, dim, 2) != FED_OK) return NULL;
    fed_rng r;
    fed_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < dim; j++)
            d->x[i * dim + j] = (float)(offset + scale * ((double)j + (double)fed_rng_normal(&r)));
        d->y[i] = (int32_t)(i % 2);
    }
    return d;
}

/* The rows of a then b. */
static fed_dataset *concat(const fed_dataset *a, const fed_dataset *b) {
    fed_dataset *d = NULL;
    if (fed_data_new(&d, a->n + b->n, a->dim, 2) != FED_OK) return NULL;
    memcpy(d->x, a->x, a->n * a->dim * sizeof(float));
    memcpy(d->x + a->n * a->dim, b->x, b->n * b->dim * sizeof(float));
    return d;
}

TEST(pooled_moments_exact) {
    /* Three sites on very different scales: a pixel-like site, a centred one, one of
     * incomes. Per feature (4 groups of 1) and per channel (1 group of 4). */
    fed_dataset *s[3] = {gauss(500, 4, 0.5, 0.1, 1), gauss(70, 4, -3.0, 2.0, 2),
                         gauss(9, 4, 40000.0, 900.0, 3)};
    fed_dataset *ab = concat(s[0], s[1]), *all = concat(ab, s[2]);
    for (size_t groups = 1; groups <= 4; groups *= 4) {
        size_t len = fed_mom_len(groups);
        CHECK_SIZE(len, 5 * (1 + 3 * groups));
        float *v = fed_mallocarray(3 * len, sizeof(float));
        for (int k = 0; k < 3; k++) CHECK_OK(fed_mom_encode(s[k], groups, v + (size_t)k * len));
        uint64_t c = 0;
        CHECK_OK(fed_mom_count(v + len, &c));
        CHECK_SIZE(c, 70);
        fed_mom_sum fwd, rev;
        CHECK_OK(fed_mom_sum_init(&fwd, groups));
        CHECK_OK(fed_mom_sum_init(&rev, groups));
        for (int k = 0; k < 3; k++) CHECK_OK(fed_mom_sum_add(&fwd, v + (size_t)k * len));
        for (int k = 2; k >= 0; k--) CHECK_OK(fed_mom_sum_add(&rev, v + (size_t)k * len));
        CHECK_MEM(fwd.limbs, rev.limbs, len * sizeof(uint64_t)); /* order does not matter */
        CHECK_SIZE(fwd.sites, 3);
        double mean[4], var[4], want_mean[4], want_var[4];
        uint64_t n = 0;
        CHECK_OK(fed_mom_sum_result(&fwd, 4, &n, mean, var));
        CHECK_SIZE(n, 579);
        CHECK_OK(fed_std_moments(all, groups, want_mean, want_var));
        for (size_t g = 0; g < groups; g++) {
            CHECK_NEAR(mean[g], want_mean[g], 1e-9 * fabs(want_mean[g]) + 1e-7);
            CHECK_NEAR(var[g], want_var[g], 1e-9 * want_var[g] + 1e-7);
        }
        /* The secure sum's fixed-point form: sum of (limb + 2^21) mod 2^32. */
        uint32_t *fixed = fed_mallocarray(len, sizeof(uint32_t));
        for (size_t i = 0; i < len; i++) {
            uint32_t t = 0;
            for (int k = 0; k < 3; k++) t += (uint32_t)v[(size_t)k * len + i] + (1u << 21);
            fixed[i] = t;
        }
        fed_mom_sum sec;
        CHECK_OK(fed_mom_sum_init(&sec, groups));
        CHECK_OK(fed_mom_sum_add_fixed(&sec, fixed, 3));
        CHECK_MEM(sec.limbs, fwd.limbs, len * sizeof(uint64_t));
        fixed[len - 1] += 3u << 21; /* a limb sum above what 3 sites can send */
        fed_mom_sum bad;
        CHECK_OK(fed_mom_sum_init(&bad, groups));
        CHECK_ERR(fed_mom_sum_add_fixed(&bad, fixed, 3), FED_ERANGE);
        CHECK_SIZE(bad.sites, 0);
        fed_mom_sum_free(&bad);
        fed_mom_sum_free(&sec);
        fed_free(fixed);
        fed_mom_sum_free(&fwd);
        fed_mom_sum_free(&rev);
        fed_free(v);
    }
    for (int k = 0; k < 3; k++) fed_data_destroy(&s[k]);
    fed_data_destroy(&ab);
    fed_data_destroy(&all);
}

TEST(refusals) {
    fed_dataset *d = gauss(10, 6, 0.0, 1.0, 4);
    float v[5 * (1 + 3 * 6)];
    CHECK_ERR(fed_mom_encode(d, 4, v), FED_ESHAPE);
    CHECK_STR(fed_errmsg(), "moments: 6 features in 4 groups");
    d->x[3 * 6 + 5] = 3e8f;
    CHECK_ERR(fed_mom_encode(d, 6, v), FED_ERANGE);
    CHECK_STR(fed_errmsg(), "moments: example 3, feature 5: 3e+08 (|x| must be below 2^28)");
    d->x[3 * 6 + 5] = NAN;
    CHECK_ERR(fed_mom_encode(d, 6, v), FED_ERANGE);
    d->x[3 * 6 + 5] = 1.0f;
    CHECK_OK(fed_mom_encode(d, 6, v));
    fed_mom_sum s;
    CHECK_OK(fed_mom_sum_init(&s, 6));
    const float bad[] = {-1.0f, 0.5f, 2097152.0f, NAN, INFINITY};
    for (size_t i = 0; i < 5; i++) {
        float keep = v[7];
        v[7] = bad[i];
        CHECK_ERR(fed_mom_sum_add(&s, v), FED_EFORMAT);
        CHECK_CONTAINS(fed_errmsg(), "moments: value 7 is");
        v[7] = keep;
    }
    CHECK_SIZE(s.sites, 0);
    for (size_t i = 0; i < s.len; i++) CHECK(s.limbs[i] == 0); /* nothing added */
    uint64_t n = 0;
    double mean[6], var[6];
    CHECK_ERR(fed_mom_sum_result(&s, 6, &n, mean, var), FED_EINVAL); /* no examples */
    v[2] = 0.25f;
    CHECK_ERR(fed_mom_count(v, &n), FED_EFORMAT);
    fed_mom_sum_free(&s);
    CHECK_ERR(fed_mom_sum_init(&s, 0), FED_EINVAL);
    CHECK(s.limbs == NULL);
    fed_data_destroy(&d);
}

int main(void) {
    RUN(pooled_moments_exact);
    RUN(refusals);
    return test_report();
}
