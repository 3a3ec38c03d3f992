/* Differential-privacy mathematics for DP-FedAvg (McMahan et al. 2018): the Rényi-DP
 * (RDP) accountant of the sampled Gaussian mechanism, its conversion to (epsilon, delta),
 * budget planning (how many rounds fit a target epsilon, how much noise a budget needs),
 * L2 clipping of an update and the adaptive clipping rule of Andrew et al. 2021.
 *
 * One round of DP-FedAvg samples each client with probability q, clips each delta to
 * L2 norm S, and adds Gaussian noise of standard deviation z*S to the sum (z is the
 * noise multiplier). Its privacy loss at integer Rényi order a >= 2 is
 *     RDP(a) = ln(A_a) / (a - 1),
 *     A_a    = sum_{i=0..a} C(a,i) (1-q)^(a-i) q^i exp((i^2 - i) / (2 z^2)),
 * and T rounds cost T*RDP(a) at every order (RDP composes by addition). Epsilon is the
 * minimum over the accountant's orders of one of two conversions (see fed_dp_conversion).
 * Everything is computed in log space, so large orders and small z do not overflow.
 *
 * Deliberately not here: drawing the noise (the aggregation code owns its RNG), secure
 * aggregation, files and logging. Everything is pure computation on its arguments except
 * the accountant, a small object without I/O that threads must not share unlocked. */
#ifndef FED_PRIVACY_DP_H
#define FED_PRIVACY_DP_H

#include "core/err.h"

#include <stddef.h>
#include <stdint.h>

/* Largest order fed_dp_rdp accepts (its cost is linear in the order). */
#define FED_DP_ORDER_MAX 65536
/* Step counts are capped here: 2^53, the last integer a double holds exactly. */
#define FED_DP_STEPS_MAX ((uint64_t)1 << 53)

/* How an RDP curve becomes (epsilon, delta)-DP; both take the minimum over orders a. */
typedef enum fed_dp_conversion {
    /* eps = RDP(a) - ln(delta) / (a - 1)   (Mironov 2017, as TF Privacy's tutorials) */
    FED_DP_BASIC,
    /* eps = RDP(a) + ln(1 - 1/a) - (ln(delta) + ln(a)) / (a - 1), clamped at 0
     * (Balle et al. 2020; Canonne, Kamath, Steinke 2020). Never larger than BASIC. */
    FED_DP_IMPROVED,
} fed_dp_conversion;

/* ---- the sampled Gaussian mechanism ---------------------------------------------- */

/* RDP of one step of the sampled Gaussian mechanism at integer order `order`, in nats,
 * into *rdp. q is the sampling rate in [0, 1], z the noise multiplier (noise standard
 * deviation over the clipping bound), finite and > 0; order in [2, FED_DP_ORDER_MAX].
 * q = 0 gives exactly 0 and q = 1 exactly order / (2 z^2). Accurate to about 1e-12
 * relative even when the result is tiny (small q, large z). *rdp is +inf only when the
 * true value overflows a double (z below about 1e-154).
 * FED_EINVAL naming the parameter for anything out of range (NaN included). */
fed_err fed_dp_rdp(double q, double z, int order, double *rdp) FED_MUST_USE;

/* Epsilon, at delta, of `steps` steps of the sampled Gaussian mechanism (q, z), minimised
 * over the accountant's orders (fed_dp_order); *order (may be NULL) gets the order that
 * achieves it, 0 when nothing was spent (steps = 0 or q = 0 give epsilon 0). delta in
 * (0, 1); steps <= FED_DP_STEPS_MAX. *eps may be +inf (z absurdly small).
 * FED_EINVAL naming the parameter otherwise. */
fed_err fed_dp_epsilon(double q, double z, uint64_t steps, double delta,
                       fed_dp_conversion conversion, double *eps, int *order) FED_MUST_USE;

/* The largest number of steps T of the mechanism (q, z) whose epsilon at delta is at
 * most target_eps (> 0), into *steps: epsilon(T) <= target_eps < epsilon(T + 1), with
 * epsilon exactly as fed_dp_epsilon computes it. 0 when a single step already exceeds
 * the target; FED_DP_STEPS_MAX when even that many fit (q = 0 spends nothing). This is
 * what stops a run before its budget is exceeded. FED_EINVAL naming the parameter. */
fed_err fed_dp_max_steps(double q, double z, double delta, double target_eps,
                         fed_dp_conversion conversion, uint64_t *steps) FED_MUST_USE;

/* The smallest noise multiplier z, within 1e-6 relative and rounded up (so the target is
 * always met), with which `steps` steps at sampling rate q spend at most target_eps at
 * delta, into *z. q in (0, 1] and steps in [1, FED_DP_STEPS_MAX] (without sampling or
 * steps no noise is needed). FED_EINVAL naming the parameter; FED_ERANGE when the target
 * is below what the orders can certify at this delta with any amount of noise (about
 * ln(1/delta) / 1023 for BASIC) or needs z outside [1e-6, 1e8]. */
fed_err fed_dp_noise_multiplier(double q, uint64_t steps, double delta, double target_eps,
                                fed_dp_conversion conversion, double *z) FED_MUST_USE;

/* ---- the accountant --------------------------------------------------------------- */

/* The orders every accountant tracks, ascending: 2..256, then 320, 384, 512, 768, 1024
 * (these only win for small epsilons). fed_dp_order(k) is the k-th, k below
 * fed_dp_num_orders() (asserted). A checkpoint should store them beside the RDP vector so
 * that a change of this list is detected on load. */
size_t fed_dp_num_orders(void);
int fed_dp_order(size_t k);

/* The RDP accumulated at each order fed_dp_order(k) by heterogeneous steps (q and z may
 * change from round to round), and the number of steps taken. Not thread-safe. */
typedef struct fed_dp_accountant fed_dp_accountant;

/* A fresh accountant (no steps, zero RDP). FED_ENOMEM (and *out = NULL) on failure. */
fed_err fed_dp_accountant_new(fed_dp_accountant **out) FED_MUST_USE;
/* NULL-safe; sets *acc to NULL. */
void fed_dp_accountant_destroy(fed_dp_accountant **acc);
/* Back to no steps and zero RDP. */
void fed_dp_accountant_reset(fed_dp_accountant *acc);

/* Adds `count` steps of the sampled Gaussian mechanism (q, z) (ranges as fed_dp_rdp;
 * count 0 is a no-op). FED_EINVAL naming the parameter; FED_ERANGE when the step count
 * would pass FED_DP_STEPS_MAX or an RDP total would overflow. The accountant is
 * unchanged on error. */
fed_err fed_dp_accountant_step(fed_dp_accountant *acc, double q, double z,
                               uint64_t count) FED_MUST_USE;

/* Steps added since creation, reset or load. */
uint64_t fed_dp_accountant_steps(const fed_dp_accountant *acc);

/* Epsilon spent so far at delta in (0, 1), minimised over orders, into *eps; *order (may
 * be NULL) gets the minimising order, 0 when nothing was spent (then *eps = 0).
 * FED_EINVAL naming delta or the conversion. */
fed_err fed_dp_accountant_epsilon(const fed_dp_accountant *acc, double delta,
                                  fed_dp_conversion conversion, double *eps,
                                  int *order) FED_MUST_USE;

/* The accumulated RDP in nats, the k-th value for order fed_dp_order(k), *n =
 * fed_dp_num_orders() values; read-only, owned by the accountant and valid until it is
 * destroyed (the values change with each step, reset or load). What a checkpoint
 * stores, with fed_dp_accountant_steps(). */
const double *fed_dp_accountant_rdp(const fed_dp_accountant *acc, size_t *n);

/* Replaces the accountant's state with a stored RDP vector (n values, the k-th for order
 * fed_dp_order(k); copied) and step count. n must be fed_dp_num_orders(), every value
 * finite and >= 0, steps <= FED_DP_STEPS_MAX, and the vector all zero when steps is 0.
 * FED_EINVAL naming the fault (with the index of a bad value); the accountant is
 * unchanged on error. */
fed_err fed_dp_accountant_load(fed_dp_accountant *acc, const double *rdp, size_t n,
                               uint64_t steps) FED_MUST_USE;

/* ---- clipping ---------------------------------------------------------------------- */

/* Scales v (n floats) in place so that its L2 norm is at most bound, the DP-FedAvg
 * clipping v <- v * min(1, bound / ||v||). The norm is computed in double; *norm_before
 * (may be NULL) gets it, *factor (may be NULL) the scale applied (1 when the vector was
 * within the bound, and then v is not touched). The factor is shrunk by 2^-22 relative so
 * that rounding to float cannot leave the norm above the bound (short of float underflow).
 * bound must be finite and > 0 (FED_EINVAL naming it); a non-finite entry in v gives
 * FED_ENONFINITE with its index and leaves v untouched. */
fed_err fed_dp_clip(float *v, size_t n, double bound, double *norm_before,
                    double *factor) FED_MUST_USE;

/* ---- noise ------------------------------------------------------------------------- */

/* Adds independent Gaussian noise N(0, std^2) to each of the n floats of v. The normals
 * come from the Box-Muller transform of a cryptographic stream, AES-256-CTR under key
 * (32 bytes) with the counter block (stream, block index): the same key and stream give
 * the same noise on every machine, so a simulation is reproducible, and a key drawn with
 * fed_sa_random_bytes gives noise nobody can predict. std must be finite and >= 0 (0:
 * nothing is added). FED_EINVAL naming std; FED_EINTERNAL if OpenSSL fails. */
fed_err fed_dp_add_gaussian(float *v, size_t n, double std, const uint8_t key[32],
                            uint64_t stream) FED_MUST_USE;

/* One step of adaptive clipping (Andrew et al. 2021, geometric update): the bound that
 * follows `bound` (finite, > 0) when a (possibly noised, hence possibly outside [0, 1])
 * fraction `fraction_unclipped` (finite) of the round's clients had an update norm <=
 * bound, aiming at the quantile `target_quantile` in [0, 1] with learning rate `eta`
 * (finite, >= 0): *new_bound = bound * exp(-eta * (fraction_unclipped - target_quantile)).
 * FED_EINVAL naming the parameter; FED_ERANGE if the new bound is not a finite positive
 * double. */
fed_err fed_dp_adaptive_clip_update(double bound, double fraction_unclipped, double target_quantile,
                                    double eta, double *new_bound) FED_MUST_USE;

#endif
