/* Exact fixed-point feature moments in limbs (dataset/moments.h). unsigned __int128 holds a
 * total of 105 bits; GCC and Clang have it on every target this project builds for. */
#include "dataset/moments.h"
#include "core/alloc.h"

#include <math.h>
#include <string.h>

__extension__ typedef unsigned __int128 u128;

#define LIMB_MASK ((UINT32_C(1) << FED_MOM_LIMB_BITS) - 1)
#define NUM_BITS  (FED_MOM_LIMBS * FED_MOM_LIMB_BITS) /* 105 */

size_t fed_mom_len(size_t groups) {
    return FED_MOM_LIMBS * (1 + 3 * groups);
}

static void put(float *out, u128 v) {
    for (int l = 0; l < FED_MOM_LIMBS; l++)
        out[l] = (float)(uint32_t)((v >> (FED_MOM_LIMB_BITS * l)) & LIMB_MASK);
}

static fed_err encode_dense(const fed_dataset *d, size_t groups, float *out) {
    if (groups == 0 || d->dim % groups != 0)
        return fed_errorf(FED_ESHAPE, "moments: %zu features in %zu groups", d->dim, groups);
    size_t per = d->dim / groups;
    const u128 limit = (u128)1 << NUM_BITS;
    const long double unit = 16777216.0L; /* 2^FED_MOM_FRAC_BITS */
    put(out, (u128)d->n);
    for (size_t g = 0; g < groups; g++) {
        u128 pos = 0, neg = 0, sq = 0;
        for (size_t i = 0; i < d->n; i++) {
            const float *row = d->x + i * d->dim + g * per;
            for (size_t j = 0; j < per; j++) {
                double x = (double)row[j];
                if (!(fabs(x) < FED_MOM_VALUE_MAX))
                    return fed_errorf(FED_ERANGE,
                                      "moments: example %zu, feature %zu: %g (|x| must be below "
                                      "2^28)",
                                      i, g * per + j, x);
                /* |x| < 2^28: x 2^24 < 2^52 and x^2 2^24 < 2^80, exact enough in long double */
                u128 a = (u128)(fabsl((long double)x) * unit + 0.5L);
                u128 s = (u128)((long double)x * (long double)x * unit + 0.5L);
                if (x >= 0)
                    pos += a;
                else
                    neg += a;
                sq += s;
            }
        }
        if (pos >= limit || neg >= limit || sq >= limit)
            return fed_errorf(FED_ERANGE, "moments: the totals of group %zu exceed 2^%d", g,
                              NUM_BITS - FED_MOM_FRAC_BITS);
        float *o = out + FED_MOM_LIMBS * (1 + 3 * g);
        put(o, pos);
        put(o + FED_MOM_LIMBS, neg);
        put(o + 2 * FED_MOM_LIMBS, sq);
    }
    return FED_OK;
}

fed_err fed_mom_encode(const fed_dataset *d, size_t groups, float *out) {
    const fed_dataset *v = NULL;
    fed_dataset *tmp = NULL;
    fed_err err = fed_data_floats(d, &v, &tmp);
    if (!err) err = encode_dense(v, groups, out);
    fed_data_destroy(&tmp);
    return err;
}

/* Whether v is an integer limb in [0, 2^21). */
static bool is_limb(float v) {
    return v >= 0.0f && v <= (float)LIMB_MASK && v == floorf(v);
}

fed_err fed_mom_count(const float *v, uint64_t *count) {
    u128 c = 0;
    for (int l = 0; l < FED_MOM_LIMBS; l++) {
        if (!is_limb(v[l]))
            return fed_errorf(FED_EFORMAT, "moments: value %d is %g, not a limb in [0, 2^21)", l,
                              (double)v[l]);
        c |= (u128)(uint32_t)v[l] << (FED_MOM_LIMB_BITS * l);
    }
    *count = c > (u128)UINT64_MAX ? UINT64_MAX : (uint64_t)c;
    return FED_OK;
}

fed_err fed_mom_sum_init(fed_mom_sum *s, size_t groups) {
    memset(s, 0, sizeof *s);
    if (groups == 0) return fed_errorf(FED_EINVAL, "moments: 0 groups");
    s->groups = groups;
    s->len = fed_mom_len(groups);
    s->limbs = fed_calloc(s->len, sizeof *s->limbs);
    return s->limbs ? FED_OK : FED_ENOMEM;
}

void fed_mom_sum_free(fed_mom_sum *s) {
    fed_free(s->limbs);
    memset(s, 0, sizeof *s);
}

fed_err fed_mom_sum_add(fed_mom_sum *s, const float *v) {
    for (size_t i = 0; i < s->len; i++)
        if (!is_limb(v[i]))
            return fed_errorf(FED_EFORMAT, "moments: value %zu is %g, not a limb in [0, 2^21)", i,
                              (double)v[i]);
    for (size_t i = 0; i < s->len; i++) s->limbs[i] += (uint64_t)v[i];
    s->sites++;
    return FED_OK;
}

fed_err fed_mom_sum_add_fixed(fed_mom_sum *s, const uint32_t *fixed, size_t sites) {
    /* Each limb travels as limb + 2^21 (clip 2^21, scale 1); the true sum is below
     * sites x 2^21 < 2^32, so it is exact modulo 2^32. */
    uint32_t offset = (uint32_t)(sites << FED_MOM_LIMB_BITS);
    for (size_t i = 0; i < s->len; i++) {
        uint32_t v = fixed[i] - offset;
        if ((uint64_t)v > (uint64_t)sites * LIMB_MASK)
            return fed_errorf(FED_ERANGE, "moments: secure sum %zu is %u, above %zu sites' limbs",
                              i, (unsigned)v, sites);
    }
    for (size_t i = 0; i < s->len; i++) s->limbs[i] += (uint32_t)(fixed[i] - offset);
    s->sites += sites;
    return FED_OK;
}

/* The number at position k (0: count, then 3 per group) of the sum, carried. */
static u128 total(const fed_mom_sum *s, size_t k) {
    u128 v = 0;
    for (int l = FED_MOM_LIMBS - 1; l >= 0; l--)
        v = (v << FED_MOM_LIMB_BITS) + s->limbs[FED_MOM_LIMBS * k + (size_t)l];
    return v;
}

fed_err fed_mom_sum_result(const fed_mom_sum *s, size_t dim, uint64_t *count, double *mean,
                           double *var) {
    if (dim % s->groups != 0)
        return fed_errorf(FED_EINVAL, "moments: %zu features in %zu groups", dim, s->groups);
    u128 n = total(s, 0);
    if (n == 0) return fed_errorf(FED_EINVAL, "moments: no examples");
    *count = n > (u128)UINT64_MAX ? UINT64_MAX : (uint64_t)n;
    const long double unit = 16777216.0L;
    long double values = (long double)n * (long double)(dim / s->groups);
    for (size_t g = 0; g < s->groups; g++) {
        long double pos = (long double)total(s, 1 + 3 * g) / unit;
        long double neg = (long double)total(s, 2 + 3 * g) / unit;
        long double sq = (long double)total(s, 3 + 3 * g) / unit;
        long double m = (pos - neg) / values;
        long double v = sq / values - m * m;
        /* Each value was rounded to 2^-24: a variance can come out a hair below 0. */
        if (v < 0) {
            if (v < -1e-6L * (sq / values) - 1e-12L)
                return fed_errorf(FED_ERANGE,
                                  "moments: group %zu: sum of squares below the squared sum", g);
            v = 0;
        }
        mean[g] = (double)m;
        var[g] = (double)v;
    }
    return FED_OK;
}
