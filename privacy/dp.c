/* The RDP accountant of the sampled Gaussian mechanism, budget planning and clipping
 * (see dp.h for the formulas). No RNG, no I/O: noise is drawn where updates are summed. */
#include "privacy/dp.h"
#include "core/alloc.h"
#include "privacy/secagg_crypto.h"

#include <assert.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

/* 2..256 and a few larger orders: those only win for small epsilons, where the
 * ln(1/delta)/(a-1) term of the conversion dominates. */
#define SMALL_ORDERS 255
#define NUM_ORDERS   (SMALL_ORDERS + 5)
static const int large_orders[NUM_ORDERS - SMALL_ORDERS] = {320, 384, 512, 768, 1024};

/* Search range of fed_dp_noise_multiplier and its relative precision. */
#define Z_MIN 1e-6
#define Z_MAX 1e8
#define Z_TOL 1e-6

struct fed_dp_accountant {
    double rdp[NUM_ORDERS]; /* accumulated RDP per order k (fed_dp_order(k)), nats */
    uint64_t steps;         /* steps added since creation, reset or load */
};

static int order_at(size_t k) {
    return k < SMALL_ORDERS ? (int)k + 2 : large_orders[k - SMALL_ORDERS];
}

size_t fed_dp_num_orders(void) {
    return NUM_ORDERS;
}

int fed_dp_order(size_t k) {
    assert(k < NUM_ORDERS);
    return order_at(k);
}

/* ---- validation -------------------------------------------------------------------- */

static fed_err check_q(double q) {
    if (!(q >= 0.0 && q <= 1.0))
        return fed_errorf(FED_EINVAL, "dp: sampling rate q %g: must be in [0, 1]", q);
    return FED_OK;
}

static fed_err check_z(double z) {
    if (!(z > 0.0 && isfinite(z)))
        return fed_errorf(FED_EINVAL, "dp: noise multiplier z %g: must be finite and > 0", z);
    return FED_OK;
}

static fed_err check_delta(double delta) {
    if (!(delta > 0.0 && delta < 1.0))
        return fed_errorf(FED_EINVAL, "dp: delta %g: must be in (0, 1)", delta);
    return FED_OK;
}

static fed_err check_conversion(fed_dp_conversion c) {
    if (c != FED_DP_BASIC && c != FED_DP_IMPROVED)
        return fed_errorf(FED_EINVAL, "dp: conversion %d: must be basic or improved", (int)c);
    return FED_OK;
}

static fed_err check_target(double eps) {
    if (!(eps > 0.0 && isfinite(eps)))
        return fed_errorf(FED_EINVAL, "dp: target epsilon %g: must be finite and > 0", eps);
    return FED_OK;
}

static fed_err check_steps(uint64_t steps) {
    if (steps > FED_DP_STEPS_MAX)
        return fed_errorf(FED_EINVAL, "dp: steps %llu: must be <= 2^53", (unsigned long long)steps);
    return FED_OK;
}

/* ---- RDP of the sampled Gaussian ----------------------------------------------------- */

/* ln(e^x - 1) for x > 0 without overflow. */
static double log_expm1(double x) {
    return x > 0.5 ? x + log1p(-exp(-x)) : log(expm1(x));
}

/* ln(1 + e^t) without overflow. */
static double softplus(double t) {
    return t > 0.0 ? t + log1p(exp(-t)) : log1p(exp(t));
}

/* RDP(a) for q in (0, 1). The binomial weights sum to 1, so
 *     A_a = 1 + S,  S = sum_{i=2..a} C(a,i) (1-q)^(a-i) q^i (exp((i^2-i)/(2z^2)) - 1),
 * (the i = 0, 1 terms vanish) and every term of S is positive: ln A_a = log1p(S) keeps
 * full relative precision when RDP is tiny, and ln S is summed in log space, one pass. */
static double rdp_sampled(double q, double z, int a) {
    const double log_q = log(q), log_1mq = log1p(-q);
    const double inv_2z2 = 0.5 / z / z;
    double log_binom = log(0.5 * a * (a - 1.0)); /* ln C(a, 2), exact below 2^26 */
    double m = -HUGE_VAL, s = 0.0;               /* ln S = m + ln s */
    for (int i = 2; i <= a; i++) {
        if (i > 2) log_binom += log((double)(a - i + 1) / i); /* C(a,i) = C(a,i-1)(a-i+1)/i */
        const double x = (double)i * (i - 1) * inv_2z2;
        if (x == HUGE_VAL) return HUGE_VAL; /* z so small that the result overflows */
        const double l = log_binom + i * log_q + (a - i) * log_1mq + log_expm1(x);
        if (l == -HUGE_VAL) continue; /* z so large that the term underflows */
        if (l > m) {
            s = s * exp(m - l) + 1.0;
            m = l;
        } else {
            s += exp(l - m);
        }
    }
    if (s == 0.0) return 0.0;
    return softplus(m + log(s)) / (a - 1);
}

/* RDP(a) for valid arguments, with the exact edge cases. */
static double rdp_at(double q, double z, int a) {
    if (q == 0.0) return 0.0;
    if (q == 1.0) return a / (2.0 * z * z); /* the Gaussian mechanism itself */
    return rdp_sampled(q, z, a);
}

fed_err fed_dp_rdp(double q, double z, int order, double *rdp) {
    fed_err err;
    if ((err = check_q(q)) || (err = check_z(z))) return err;
    if (order < 2 || order > FED_DP_ORDER_MAX)
        return fed_errorf(FED_EINVAL, "dp: order %d: must be in [2, %d]", order, FED_DP_ORDER_MAX);
    *rdp = rdp_at(q, z, order);
    return FED_OK;
}

/* One step's RDP at every order. */
static void rdp_vector(double q, double z, double rdp[NUM_ORDERS]) {
    for (size_t k = 0; k < NUM_ORDERS; k++) rdp[k] = rdp_at(q, z, order_at(k));
}

/* ---- conversion to (epsilon, delta) ------------------------------------------------------ */

/* The conversion's additive term at order a (everything but the RDP). */
static double conversion_term(fed_dp_conversion c, double log_delta, int a) {
    if (c == FED_DP_BASIC) return -log_delta / (a - 1);
    return log1p(-1.0 / a) - (log_delta + log(a)) / (a - 1);
}

/* Epsilon of scale * rdp: the minimum over orders, 0 when nothing was spent (all RDP zero
 * means the mechanism's outputs do not depend on the data). */
static double epsilon_of(const double rdp[NUM_ORDERS], double scale, double delta,
                         fed_dp_conversion c, int *order) {
    const double log_delta = log(delta);
    double best = HUGE_VAL;
    int best_order = 0;
    bool spent = false;
    for (size_t k = 0; k < NUM_ORDERS; k++) {
        const double r = scale * rdp[k];
        spent |= r > 0.0;
        const double e = r + conversion_term(c, log_delta, order_at(k));
        if (e < best) {
            best = e;
            best_order = order_at(k);
        }
    }
    if (!spent) {
        best = 0.0;
        best_order = 0;
    }
    if (order) *order = best_order;
    return best > 0.0 ? best : 0.0;
}

fed_err fed_dp_epsilon(double q, double z, uint64_t steps, double delta,
                       fed_dp_conversion conversion, double *eps, int *order) {
    fed_err err;
    if ((err = check_q(q)) || (err = check_z(z)) || (err = check_steps(steps)) ||
        (err = check_delta(delta)) || (err = check_conversion(conversion)))
        return err;
    double rdp[NUM_ORDERS];
    rdp_vector(q, z, rdp);
    *eps = epsilon_of(rdp, (double)steps, delta, conversion, order);
    return FED_OK;
}

/* ---- budget planning ------------------------------------------------------------------- */

fed_err fed_dp_max_steps(double q, double z, double delta, double target_eps,
                         fed_dp_conversion conversion, uint64_t *steps) {
    fed_err err;
    if ((err = check_q(q)) || (err = check_z(z)) || (err = check_delta(delta)) ||
        (err = check_target(target_eps)) || (err = check_conversion(conversion)))
        return err;
    double rdp[NUM_ORDERS];
    rdp_vector(q, z, rdp);
#define FITS(t) (epsilon_of(rdp, (double)(t), delta, conversion, NULL) <= target_eps)
    /* Epsilon grows with T: gallop to a bracket lo fits, hi does not, then bisect. */
    uint64_t lo = 0, hi = 1;
    while (FITS(hi)) {
        lo = hi;
        if (hi == FED_DP_STEPS_MAX) {
            *steps = hi;
            return FED_OK;
        }
        hi = hi > FED_DP_STEPS_MAX / 2 ? FED_DP_STEPS_MAX : 2 * hi;
    }
    while (hi - lo > 1) {
        const uint64_t mid = lo + (hi - lo) / 2;
        if (FITS(mid))
            lo = mid;
        else
            hi = mid;
    }
#undef FITS
    *steps = lo;
    return FED_OK;
}

/* Epsilon of `steps` steps of (q, z). */
static double epsilon_at_z(double q, double z, double steps, double delta, fed_dp_conversion c) {
    double rdp[NUM_ORDERS];
    rdp_vector(q, z, rdp);
    return epsilon_of(rdp, steps, delta, c, NULL);
}

fed_err fed_dp_noise_multiplier(double q, uint64_t steps, double delta, double target_eps,
                                fed_dp_conversion conversion, double *z) {
    fed_err err;
    if (!(q > 0.0 && q <= 1.0))
        return fed_errorf(FED_EINVAL, "dp: sampling rate q %g: must be in (0, 1]", q);
    if (steps < 1 || steps > FED_DP_STEPS_MAX)
        return fed_errorf(FED_EINVAL, "dp: steps %llu: must be in [1, 2^53]",
                          (unsigned long long)steps);
    if ((err = check_delta(delta)) || (err = check_target(target_eps)) ||
        (err = check_conversion(conversion)))
        return err;
    /* With infinite noise only the conversion term is left: no z gets below it. */
    double least = HUGE_VAL;
    for (size_t k = 0; k < NUM_ORDERS; k++)
        least = fmin(least, conversion_term(conversion, log(delta), order_at(k)));
    if (target_eps <= least)
        return fed_errorf(FED_ERANGE,
                          "dp: target epsilon %g: must exceed %g, the least any noise "
                          "certifies at delta %g",
                          target_eps, least, delta);
    const double t = (double)steps;
#define FITS(zz) (epsilon_at_z(q, zz, t, delta, conversion) <= target_eps)
    /* Epsilon falls as z grows: bracket lo fails, hi fits, then bisect. */
    double hi = 1.0;
    while (!FITS(hi))
        if ((hi *= 2.0) > Z_MAX) goto range;
    double lo = hi / 2.0;
    while (FITS(lo)) {
        hi = lo;
        if ((lo /= 2.0) < Z_MIN) goto range;
    }
    while (hi - lo > Z_TOL * hi) {
        const double mid = 0.5 * (lo + hi);
        if (FITS(mid))
            hi = mid;
        else
            lo = mid;
    }
#undef FITS
    *z = hi;
    return FED_OK;
range:
    return fed_errorf(FED_ERANGE,
                      "dp: target epsilon %g: needs a noise multiplier outside [%g, %g]",
                      target_eps, Z_MIN, Z_MAX);
}

/* ---- the accountant ---------------------------------------------------------------------- */

fed_err fed_dp_accountant_new(fed_dp_accountant **out) {
    *out = fed_calloc(1, sizeof **out);
    return *out ? FED_OK : FED_ENOMEM;
}

void fed_dp_accountant_destroy(fed_dp_accountant **acc) {
    if (!acc) return;
    fed_free(*acc);
    *acc = NULL;
}

void fed_dp_accountant_reset(fed_dp_accountant *acc) {
    memset(acc, 0, sizeof *acc);
}

fed_err fed_dp_accountant_step(fed_dp_accountant *acc, double q, double z, uint64_t count) {
    fed_err err;
    if ((err = check_q(q)) || (err = check_z(z))) return err;
    if (count > FED_DP_STEPS_MAX - acc->steps)
        return fed_errorf(FED_ERANGE, "dp: accountant: %llu + %llu steps: more than 2^53",
                          (unsigned long long)acc->steps, (unsigned long long)count);
    if (count == 0) return FED_OK;
    double total[NUM_ORDERS];
    rdp_vector(q, z, total);
    for (size_t k = 0; k < NUM_ORDERS; k++) {
        total[k] = acc->rdp[k] + (double)count * total[k];
        if (!isfinite(total[k]))
            return fed_errorf(FED_ERANGE, "dp: accountant: RDP at order %d overflows (z %g)",
                              order_at(k), z);
    }
    memcpy(acc->rdp, total, sizeof total);
    acc->steps += count;
    return FED_OK;
}

uint64_t fed_dp_accountant_steps(const fed_dp_accountant *acc) {
    return acc->steps;
}

fed_err fed_dp_accountant_epsilon(const fed_dp_accountant *acc, double delta,
                                  fed_dp_conversion conversion, double *eps, int *order) {
    fed_err err;
    if ((err = check_delta(delta)) || (err = check_conversion(conversion))) return err;
    *eps = epsilon_of(acc->rdp, 1.0, delta, conversion, order);
    return FED_OK;
}

const double *fed_dp_accountant_rdp(const fed_dp_accountant *acc, size_t *n) {
    *n = NUM_ORDERS;
    return acc->rdp;
}

fed_err fed_dp_accountant_load(fed_dp_accountant *acc, const double *rdp, size_t n,
                               uint64_t steps) {
    if (n != NUM_ORDERS)
        return fed_errorf(FED_EINVAL, "dp: accountant: RDP vector of %zu values: expected %d", n,
                          NUM_ORDERS);
    fed_err err = check_steps(steps);
    if (err) return err;
    for (size_t k = 0; k < n; k++) {
        if (!(rdp[k] >= 0.0 && isfinite(rdp[k])))
            return fed_errorf(FED_EINVAL, "dp: accountant: RDP[%zu] %g: must be finite and >= 0", k,
                              rdp[k]);
        if (steps == 0 && rdp[k] != 0.0)
            return fed_errorf(FED_EINVAL, "dp: accountant: RDP[%zu] %g: must be 0 with 0 steps", k,
                              rdp[k]);
    }
    memcpy(acc->rdp, rdp, sizeof acc->rdp);
    acc->steps = steps;
    return FED_OK;
}

/* ---- clipping ---------------------------------------------------------------------------- */

/* Float rounding grows each entry by at most 2^-24 relative: shrinking the factor by
 * 2^-22 keeps the clipped norm at or below the bound. */
#define CLIP_SHRINK (1.0 - 0x1p-22)

fed_err fed_dp_clip(float *v, size_t n, double bound, double *norm_before, double *factor) {
    if (!(bound > 0.0 && isfinite(bound)))
        return fed_errorf(FED_EINVAL, "dp: clip bound %g: must be finite and > 0", bound);
    double sumsq = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(v[i]))
            return fed_errorf(FED_ENONFINITE, "dp: clip: entry %zu is %g", i, (double)v[i]);
        sumsq += (double)v[i] * (double)v[i];
    }
    const double norm = sqrt(sumsq);
    double f = 1.0;
    if (norm > bound) {
        f = bound / norm * CLIP_SHRINK;
        for (size_t i = 0; i < n; i++) v[i] = (float)((double)v[i] * f);
    }
    if (norm_before) *norm_before = norm;
    if (factor) *factor = f;
    return FED_OK;
}

fed_err fed_dp_adaptive_clip_update(double bound, double fraction_unclipped, double target_quantile,
                                    double eta, double *new_bound) {
    if (!(bound > 0.0 && isfinite(bound)))
        return fed_errorf(FED_EINVAL, "dp: clip bound %g: must be finite and > 0", bound);
    if (!isfinite(fraction_unclipped))
        return fed_errorf(FED_EINVAL, "dp: unclipped fraction %g: must be finite",
                          fraction_unclipped);
    if (!(target_quantile >= 0.0 && target_quantile <= 1.0))
        return fed_errorf(FED_EINVAL, "dp: target quantile %g: must be in [0, 1]", target_quantile);
    if (!(eta >= 0.0 && isfinite(eta)))
        return fed_errorf(FED_EINVAL, "dp: clip learning rate eta %g: must be finite and >= 0",
                          eta);
    const double b = bound * exp(-eta * (fraction_unclipped - target_quantile));
    if (!(b > 0.0 && isfinite(b)))
        return fed_errorf(FED_ERANGE, "dp: adaptive clip bound %g: out of range", b);
    *new_bound = b;
    return FED_OK;
}

/* ---- noise ------------------------------------------------------------------------- */

#define NOISE_BLOCK 4096 /* bytes of keystream per call: 512 normals */
#define TWO_PI      6.283185307179586476925

fed_err fed_dp_add_gaussian(float *v, size_t n, double std, const uint8_t key[32],
                            uint64_t stream) {
    if (!(std >= 0.0 && isfinite(std)))
        return fed_errorf(FED_EINVAL, "dp: noise std %g: must be finite and >= 0", std);
    if (std == 0.0) return FED_OK;
    uint8_t ks[NOISE_BLOCK], iv[FED_SA_IV_LEN];
    fed_err err = FED_OK;
    for (size_t i = 0, block = 0; i < n; block++) {
        /* Counter block: stream, then the index of the first 16-byte block, big-endian. */
        uint64_t ctr = (uint64_t)block * (NOISE_BLOCK / 16);
        for (int b = 0; b < 8; b++) {
            iv[b] = (uint8_t)(stream >> (56 - 8 * b));
            iv[8 + b] = (uint8_t)(ctr >> (56 - 8 * b));
        }
        if ((err = fed_sa_keystream(ks, sizeof ks, key, iv))) break;
        for (size_t off = 0; off < sizeof ks && i < n; off += 16) {
            uint64_t a = 0, b = 0;
            for (int k = 0; k < 8; k++) {
                a |= (uint64_t)ks[off + (size_t)k] << (8 * k);
                b |= (uint64_t)ks[off + 8 + (size_t)k] << (8 * k);
            }
            double u1 = ((double)(a >> 11) + 1.0) * 0x1p-53; /* (0, 1]: log is finite */
            double u2 = (double)(b >> 11) * 0x1p-53;
            double r = sqrt(-2.0 * log(u1)) * std;
            v[i] = (float)((double)v[i] + r * cos(TWO_PI * u2));
            if (++i < n) {
                v[i] = (float)((double)v[i] + r * sin(TWO_PI * u2));
                i++;
            }
        }
    }
    fed_sa_wipe(ks, sizeof ks);
    return err;
}
