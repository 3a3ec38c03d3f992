/* xoshiro256** (Blackman & Vigna) with splitmix64 seeding. */
#include "core/rng.h"

#include <assert.h>
#include <math.h>

uint64_t fed_hash_bytes(const void *p, size_t n) {
    const uint8_t *b = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return fed_mix64(h);
}

uint64_t fed_mix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

void fed_rng_seed(fed_rng *r, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) {
        x += 0x9e3779b97f4a7c15ULL;
        r->s[i] = fed_mix64(x);
    }
    if ((r->s[0] | r->s[1] | r->s[2] | r->s[3]) == 0) r->s[0] = 1;
    r->seed = seed;
    r->spare = 0.0f;
    r->has_spare = 0;
}

fed_rng fed_rng_stream(uint64_t seed, uint64_t stream) {
    fed_rng r;
    fed_rng_seed(&r, fed_mix64(seed ^ fed_mix64(stream + 0x632be59bd9b4e019ULL)));
    return r;
}

static inline uint64_t rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

uint64_t fed_rng_u64(fed_rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

float fed_rng_uniform(fed_rng *r) {
    return (float)(fed_rng_u64(r) >> 40) * 0x1.0p-24f;
}

double fed_rng_uniform_d(fed_rng *r) {
    return (double)(fed_rng_u64(r) >> 11) * 0x1.0p-53;
}

uint64_t fed_rng_below(fed_rng *r, uint64_t n) {
    assert(n > 0);
    /* Rejection sampling on the top of the range: unbiased. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do {
        x = fed_rng_u64(r);
    } while (x >= limit);
    return x % n;
}

float fed_rng_normal(fed_rng *r) {
    if (r->has_spare) {
        r->has_spare = 0;
        return r->spare;
    }
    double u1, u2;
    do {
        u1 = fed_rng_uniform_d(r);
    } while (u1 <= 0.0);
    u2 = fed_rng_uniform_d(r);
    double mag = sqrt(-2.0 * log(u1));
    r->spare = (float)(mag * sin(6.283185307179586 * u2));
    r->has_spare = 1;
    return (float)(mag * cos(6.283185307179586 * u2));
}

void fed_rng_shuffle(fed_rng *r, size_t *idx, size_t n) {
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)fed_rng_below(r, i);
        size_t t = idx[i - 1];
        idx[i - 1] = idx[j];
        idx[j] = t;
    }
}
