/* Seeded, deterministic random numbers: xoshiro256** seeded through splitmix64.
 * Same seed, same sequence, on every machine. Streams split from one seed (one per
 * client, worker or purpose) are independent of each other and of the order in which
 * they are made, which is what makes a whole simulated federation reproducible.
 *
 * Not for cryptography: masks and keys use OpenSSL (see net/ and later privacy code). */
#ifndef FED_RNG_H
#define FED_RNG_H

#include <stddef.h>
#include <stdint.h>

/* A generator is a small value; copy it to fork a sequence. */
typedef struct fed_rng {
    uint64_t s[4]; /* xoshiro256** state, never all zero */
    uint64_t seed; /* seed this stream was made from (for fed_rng_stream children) */
    float spare;   /* second normal variate of the last Box-Muller pair */
    int has_spare; /* 1 when spare holds an unused variate */
} fed_rng;

/* A generator for seed. */
void fed_rng_seed(fed_rng *r, uint64_t seed);
/* The generator for stream `stream` of `seed` (client 17, worker 2, "dropout"...);
 * depends only on (seed, stream). */
fed_rng fed_rng_stream(uint64_t seed, uint64_t stream);

uint64_t fed_rng_u64(fed_rng *r);
/* Uniform in [0, 1) with 24 random bits. */
float fed_rng_uniform(fed_rng *r);
/* Uniform in [0, 1) with 53 random bits. */
double fed_rng_uniform_d(fed_rng *r);
/* Uniform integer in [0, n) without modulo bias; n > 0. */
uint64_t fed_rng_below(fed_rng *r, uint64_t n);
/* Standard normal (Box-Muller). */
float fed_rng_normal(fed_rng *r);
/* Fisher-Yates shuffle of idx[0..n). */
void fed_rng_shuffle(fed_rng *r, size_t *idx, size_t n);

/* splitmix64 finaliser: a good 64-bit mixing function for hashing seeds. */
uint64_t fed_mix64(uint64_t x);
/* A hash of n bytes for hash tables (FNV-1a, then fed_mix64 so the low bits a
 * power-of-two table uses depend on every byte); not cryptographic. */
uint64_t fed_hash_bytes(const void *p, size_t n);

#endif
