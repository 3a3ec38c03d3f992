/* A federation's input statistics, summed exactly: each site encodes the example count,
 * and per input group the sums of positive parts, of negative parts and of squares of
 * its raw training values, as fixed-point integers (units of 2^-24) split into 21-bit
 * limbs, one float each. Limbs add exactly: the coordinator sums them over the sites,
 * in the clear or through secure aggregation (privacy/secagg.h carries an integer limb
 * in [0, 2^21) unchanged with clip range 2^21 and 2^22 quantization levels, and gives
 * the exact fixed-point sum), then carries and divides once, so the federation's mean
 * and variance are those of the pooled data up to the 2^-24 rounding of each value,
 * whatever the order or grouping of the sites. It lives in the data layer because the
 * encoding reads a data set and nothing else (summing needs less). What is not here:
 * the round that asks for them (coordinator/), the standardizer they make
 * (dataset/dataset.h).
 *
 * Layout of an encoded vector, FED_MOM_LIMBS limbs (least significant first) per number:
 *     count, then for each group g: positive sum, negative sum, sum of squares
 * A site's values must satisfy |x| < 2^28 and its totals fit 5 x 21 = 105 bits. */
#ifndef FED_MOMENTS_H
#define FED_MOMENTS_H

#include "dataset/dataset.h"
#include "core/err.h"

#include <stddef.h>
#include <stdint.h>

#define FED_MOM_LIMBS     5
#define FED_MOM_LIMB_BITS 21
#define FED_MOM_FRAC_BITS 24                  /* fixed point: units of 2^-24 */
#define FED_MOM_CLIP      2097152.0           /* 2^21: the secure sum's clip range */
#define FED_MOM_QUANT     (UINT32_C(1) << 22) /* its quantization levels */
#define FED_MOM_VALUE_MAX 268435456.0         /* 2^28: largest |x| a site may hold */

/* Floats of the encoding of `groups` groups. */
size_t fed_mom_len(size_t groups);

/* Encodes d's moments in `groups` groups (dividing d->dim; group g holds features
 * [g * dim / groups, (g + 1) * dim / groups)) into out[fed_mom_len(groups)].
 * FED_ESHAPE when groups does not divide d->dim, FED_ERANGE naming the example and
 * feature of a value with |x| >= 2^28 (or not finite), or when a total overflows. */
fed_err fed_mom_encode(const fed_dataset *d, size_t groups, float *out) FED_MUST_USE;

/* The example count an encoded vector holds; FED_EFORMAT when a count limb is not an
 * integer in [0, 2^21). */
fed_err fed_mom_count(const float *v, uint64_t *count) FED_MUST_USE;

/* The running sum of encoded vectors, exact. */
typedef struct fed_mom_sum {
    size_t groups;   /* input groups */
    size_t len;      /* fed_mom_len(groups) */
    uint64_t *limbs; /* (len) limb sums, carried only at the end */
    size_t sites;    /* vectors added */
} fed_mom_sum;

/* Allocates a zero sum. FED_EINVAL for 0 groups. */
fed_err fed_mom_sum_init(fed_mom_sum *s, size_t groups) FED_MUST_USE;
void fed_mom_sum_free(fed_mom_sum *s);
/* Adds one site's encoded vector v[s->len], checking first that every value is an
 * integer limb in [0, 2^21): FED_EFORMAT naming the index otherwise (nothing added). */
fed_err fed_mom_sum_add(fed_mom_sum *s, const float *v) FED_MUST_USE;
/* Adds the unmasked fixed-point sum of `sites` vectors as secure aggregation gives it
 * (fixed[i] = sum of (limb + 2^21) mod 2^32: fed_sa_server_finalize's `fixed`). */
fed_err fed_mom_sum_add_fixed(fed_mom_sum *s, const uint32_t *fixed, size_t sites) FED_MUST_USE;
/* The pooled mean and population variance of each group for inputs of dim features,
 * and the example count. FED_EINVAL for no examples or a dim the groups do not divide,
 * FED_ERANGE for totals that are not consistent (a negative variance beyond rounding). */
fed_err fed_mom_sum_result(const fed_mom_sum *s, size_t dim, uint64_t *count, double *mean,
                           double *var) FED_MUST_USE;

#endif
