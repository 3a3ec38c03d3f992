/* The cryptographic and arithmetic primitives of secure aggregation (SecAgg / SecAgg+,
 * see the notes on "Secure aggregation"): X25519 key agreement with HKDF-SHA256, mask
 * expansion with AES-256-CTR, clipping and stochastic rounding to fixed point mod 2^32,
 * Shamir secret sharing over GF(2^61 - 1), and AES-256-GCM sealing of shares from one
 * client to another. Deliberately nothing about rounds, neighbour graphs, messages or
 * sockets: the round protocol is built on top of these functions.
 *
 * How the pieces fit, for client u in round r with neighbours v (k of them):
 *
 *   fed_sa_keypair_new(&kp)                              fresh X25519 pair every round
 *   fed_sa_agree(m_uv, kp.secret, pub_v, {r, u, v, "mask"})   pairwise mask key
 *   fed_sa_agree(e_uv, kp.secret, pub_v, {r, u, v, "share"})  pairwise sealing key
 *   fed_sa_random_bytes(b_u, 32)                         self-mask seed
 *   fed_sa_shamir_split(sh, b_u, t, k, xs), and again for kp.secret
 *   fed_sa_share_encode + fed_sa_seal(.., e_uv, u, v, r, ..)  one envelope per neighbour
 *   fed_sa_quantize(y, x, n, clip, q, NULL)              delta -> y in [0, q]^n
 *   fed_sa_mask_add(y, n, b_u, r, +1)                    self mask
 *   fed_sa_mask_add(y, n, m_uv, r, u < v ? +1 : -1)      pairwise masks cancel in the sum
 *
 * The coordinator sums the y mod 2^32, removes the survivors' self masks (their b from
 * shares) and the dropped clients' pairwise masks (their X25519 secret from shares, then
 * fed_sa_agree with each surviving neighbour's public key), and calls
 * fed_sa_dequantize_sum.
 *
 * Client ids are the small integers the round protocol gives its participants (bound to
 * their certificate identity by the coordinator). Integrity failures (an AEAD tag that
 * does not verify, Shamir shares that do not lie on one polynomial) return FED_EAUTH:
 * err.h has no integrity code and "authentication failed" is the closest.
 *
 * Every function that can fail returns a fed_err and records a detail (fed_errmsg())
 * naming the argument at fault. Secret temporaries are wiped with OPENSSL_cleanse; the
 * secrets a caller holds (key pairs, seeds, shares, derived keys) are its to wipe with
 * fed_sa_wipe(). Thread-safe: nothing is kept between calls. */
#ifndef FED_SECAGG_CRYPTO_H
#define FED_SECAGG_CRYPTO_H

#include "core/err.h"

#include <stddef.h>
#include <stdint.h>

#define FED_SA_KEY_LEN       32   /* X25519 keys, derived keys, mask seeds: bytes */
#define FED_SA_IV_LEN        16   /* AES-256-CTR initial counter block: bytes */
#define FED_SA_PURPOSE_MAX   32   /* longest purpose label of a derived key: bytes */
#define FED_SA_SECRET_LEN    32   /* a Shamir-shared secret: bytes */
#define FED_SA_SHARE_WORDS   8    /* field elements per share: one per 32-bit secret word */
#define FED_SA_SHARE_BYTES   68   /* an encoded share: x (u32) then y[8] (u64), little-endian */
#define FED_SA_SHARES_MAX    1024 /* most shares of one secret (largest n); see split */
#define FED_SA_SEAL_OVERHEAD 28   /* sealed = 12-byte nonce, ciphertext, 16-byte tag */
#define FED_SA_PRIME         ((UINT64_C(1) << 61) - 1) /* the Shamir field's modulus */

/* Wipes n bytes at p in a way the compiler cannot elide (OPENSSL_cleanse). NULL-safe. */
void fed_sa_wipe(void *p, size_t n);

/* n bytes from the operating system's CSPRNG (OpenSSL RAND_bytes), e.g. self-mask seeds.
 * FED_EINTERNAL if the generator fails: never silently weaker randomness. */
fed_err fed_sa_random_bytes(uint8_t *out, size_t n) FED_MUST_USE;

/* ---- Key agreement ------------------------------------------------------------------ */

/* An X25519 key pair as raw RFC 7748 bytes. A small value; wipe it with
 * fed_sa_wipe(&kp, sizeof kp) when done. */
typedef struct fed_sa_keypair {
    uint8_t pub[FED_SA_KEY_LEN];    /* public key, advertised through the coordinator */
    uint8_t secret[FED_SA_KEY_LEN]; /* secret scalar as generated (X25519 clamps on use) */
} fed_sa_keypair;

/* A fresh key pair from the CSPRNG. FED_EINTERNAL if OpenSSL fails (kp wiped). */
fed_err fed_sa_keypair_new(fed_sa_keypair *kp) FED_MUST_USE;

/* The key pair of a known secret: after rebuilding a dropped client's secret from shares,
 * compare kp->pub with the public key it advertised. FED_EINTERNAL if OpenSSL fails. */
fed_err fed_sa_keypair_from_secret(fed_sa_keypair *kp,
                                   const uint8_t secret[FED_SA_KEY_LEN]) FED_MUST_USE;

/* Raw X25519: shared = X25519(secret, peer_public), no key derivation (use fed_sa_agree;
 * this is public for the RFC 7748 test vectors). FED_EINVAL naming peer_public when the
 * result is all zero (a low-order point: the peer is misbehaving); FED_EINTERNAL if
 * OpenSSL fails otherwise. shared is wiped on error. */
fed_err fed_sa_x25519(uint8_t shared[FED_SA_KEY_LEN], const uint8_t secret[FED_SA_KEY_LEN],
                      const uint8_t peer_public[FED_SA_KEY_LEN]) FED_MUST_USE;

/* What a derived key is for. Both ends of a pair pass the same round and purpose, their
 * own id as self_id and the other's as peer_id; the derivation orders the ids itself. */
typedef struct fed_sa_context {
    uint64_t round;      /* round number: a new key every round */
    uint32_t self_id;    /* this client's id in the round */
    uint32_t peer_id;    /* the other client's id; must differ from self_id */
    const char *purpose; /* label of 1..FED_SA_PURPOSE_MAX bytes: "mask", "share", ... */
} fed_sa_context;

/* key = HKDF-SHA256(ikm = X25519(secret, peer_public), salt = "fedtune/secagg/v1",
 *                   info = purpose length (1 byte) || purpose || round (u64 LE) ||
 *                          lower id (u32 LE) || its public key ||
 *                          higher id (u32 LE) || its public key).
 * Both public keys are bound, so a key belongs to exactly the keys the coordinator
 * relayed. FED_EINVAL naming ctx->purpose (NULL, empty or too long) or ctx->peer_id
 * (equal to self_id); the errors of fed_sa_x25519. key is wiped on error. */
fed_err fed_sa_agree(uint8_t key[FED_SA_KEY_LEN], const uint8_t secret[FED_SA_KEY_LEN],
                     const uint8_t peer_public[FED_SA_KEY_LEN],
                     const fed_sa_context *ctx) FED_MUST_USE;

/* ---- Masks -------------------------------------------------------------------------- */

/* The initial counter block of round's mask stream: round as u64 big-endian in bytes
 * 0..7, then a 64-bit big-endian block counter starting at 0 (2^64 blocks: never wraps
 * into the round). Keys already differ every round; the round in the IV is defence in
 * depth against a self-mask seed used twice by mistake. */
void fed_sa_mask_iv(uint8_t iv[FED_SA_IV_LEN], uint64_t round);

/* out = the first len bytes of AES-256-CTR(key, iv) (the encryption of zeros; OpenSSL
 * increments all 128 bits of the counter block big-endian, as SP 800-38A). The stream
 * under every mask. FED_EINTERNAL if OpenSSL fails. */
fed_err fed_sa_keystream(uint8_t *out, size_t len, const uint8_t key[FED_SA_KEY_LEN],
                         const uint8_t iv[FED_SA_IV_LEN]) FED_MUST_USE;

/* v[i] += sign * w[i] mod 2^32 for i < n, where w[i] is the little-endian uint32 at bytes
 * 4i..4i+3 of fed_sa_keystream(key, fed_sa_mask_iv(round)); sign is +1 or -1. Streams in
 * fixed-size blocks (no allocation proportional to n) and wipes its buffer. Adding then
 * subtracting the same mask restores v exactly. FED_EINVAL naming sign, or n when 4n
 * overflows; FED_EINTERNAL if OpenSSL fails (v then partly masked: discard it). */
fed_err fed_sa_mask_add(uint32_t *v, size_t n, const uint8_t key[FED_SA_KEY_LEN], uint64_t round,
                        int sign) FED_MUST_USE;

/* ---- Fixed point -------------------------------------------------------------------- */

/* out[i] = stochastic rounding of y = (clamp(x[i], -c, c) + c) * q / (2c), an integer in
 * [0, q] (c = clip_range, q = quant_range): floor(y) + 1 with probability y - floor(y),
 * else floor(y), so E[out[i]] = y up to 2^-32 (the coin is 32 keystream bits). -c maps to
 * 0, 0 to q/2, +c to q; one step is 2c/q. Flower's defaults: c = 8.0, q = 2^22.
 * The coins come from AES-256-CTR under rng_key (a label IV distinct from mask IVs), so a
 * fixed key reproduces the rounding (tests); pass NULL for a fresh key from the CSPRNG
 * (production). Never use a mask key here. FED_EINVAL naming clip_range (not finite and
 * > 0) or quant_range (0); FED_ENONFINITE naming the first non-finite x[i] (out then
 * unspecified); FED_EINTERNAL if OpenSSL fails. */
fed_err fed_sa_quantize(uint32_t *out, const float *x, size_t n, double clip_range,
                        uint32_t quant_range, const uint8_t *rng_key) FED_MUST_USE;

/* The inverse for a sum of num_clients quantized vectors (masks removed):
 * out[i] = sum[i] * 2c / q - num_clients * c, the sum of the clipped inputs up to
 * num_clients rounding steps of 2c/q each (plus float rounding of the result).
 * Needs num_clients * quant_range < 2^32, so the true sum never wraps: FED_ERANGE naming
 * num_clients otherwise. FED_ERANGE naming sum[i] when sum[i] > num_clients * q, which no
 * honest sum can be (a mask left in, a wrong client count); out is then unspecified.
 * FED_EINVAL naming clip_range, quant_range or num_clients (0). */
fed_err fed_sa_dequantize_sum(float *out, const uint32_t *sum, size_t n, size_t num_clients,
                              double clip_range, uint32_t quant_range) FED_MUST_USE;

/* ---- Shamir secret sharing over GF(p), p = 2^61 - 1 --------------------------------- */

/* One share of a FED_SA_SECRET_LEN-byte secret: the secret is read as 8 little-endian
 * uint32 words, each the constant term of its own random polynomial of degree t - 1 over
 * GF(p), and y[j] is polynomial j at x. A share is secret: wipe it when done. */
typedef struct fed_sa_share {
    uint32_t x;                     /* evaluation point, 1..p-1: the holder's id */
    uint64_t y[FED_SA_SHARE_WORDS]; /* polynomial values, each < FED_SA_PRIME */
} fed_sa_share;

/* Splits secret into n shares, any t of which rebuild it and any t - 1 of which reveal
 * nothing. The holders' x coordinates are xs[0..n) (e.g. the recipients' client ids), or
 * 1..n when xs is NULL; shares[i] is for xs[i]. Coefficients are uniform in GF(p) from
 * RAND_bytes and wiped. 1 <= t <= n <= FED_SA_SHARES_MAX (all-pairs graphs of up to 1025
 * clients; Flower's q = 2^22 sums at most 1023 clients anyway, and combining is O(t^2)).
 * FED_EINVAL naming t, n or xs[i] (zero or a duplicate); FED_ENOMEM; FED_EINTERNAL if
 * RAND_bytes fails. shares are wiped on error. */
fed_err fed_sa_shamir_split(fed_sa_share *shares, const uint8_t secret[FED_SA_SECRET_LEN], size_t t,
                            size_t n, const uint32_t *xs) FED_MUST_USE;

/* Rebuilds the secret from count >= t shares by Lagrange interpolation at 0 of the first
 * t, then checks that every further share lies on the same polynomials. FED_EAUTH when
 * one does not (a share was altered; the detail names its x, though the culprit may be
 * among the first t), or when a rebuilt word is not below 2^32, which is what too few
 * shares (t understated) or an altered share give with overwhelming probability but no
 * certainty. FED_EINVAL naming t (0 or above FED_SA_SHARES_MAX), count (< t), or
 * shares[i] (x zero or duplicate, y[j] not below p); FED_ENOMEM. secret is wiped on
 * error. */
fed_err fed_sa_shamir_combine(uint8_t secret[FED_SA_SECRET_LEN], const fed_sa_share *shares,
                              size_t count, size_t t) FED_MUST_USE;

/* The wire form of a share: x as u32 LE, then y[0..8) as u64 LE (FED_SA_SHARE_BYTES). */
void fed_sa_share_encode(uint8_t out[FED_SA_SHARE_BYTES], const fed_sa_share *share);

/* Parses the wire form. FED_EFORMAT naming x (zero) or y[j] (not below p). */
fed_err fed_sa_share_decode(fed_sa_share *share, const uint8_t in[FED_SA_SHARE_BYTES]) FED_MUST_USE;

/* ---- Sealing shares for one recipient ----------------------------------------------- */

/* AES-256-GCM under key (fed_sa_agree with purpose "share") of msg[0..len), into
 * out = nonce (12 random bytes) || ciphertext (len bytes) || tag (16 bytes), i.e.
 * len + FED_SA_SEAL_OVERHEAD bytes. Associated data "fedtune/secagg/seal/v1" || sender
 * (u32 LE) || recipient (u32 LE) || round (u64 LE) bind the envelope to its direction and
 * round. Random nonces, because both directions of a pair share one key and a sender may
 * seal several messages per round. FED_EINVAL naming out_cap (< len + overhead) or len
 * (beyond 2^30); FED_EINTERNAL if OpenSSL fails (out wiped). */
fed_err fed_sa_seal(uint8_t *out, size_t out_cap, const uint8_t key[FED_SA_KEY_LEN],
                    uint32_t sender, uint32_t recipient, uint64_t round, const uint8_t *msg,
                    size_t len) FED_MUST_USE;

/* Opens what fed_sa_seal made: sealed_len - FED_SA_SEAL_OVERHEAD plaintext bytes to out.
 * FED_EAUTH when the envelope does not verify: any altered bit, a different key, sender,
 * recipient or round (an envelope replayed elsewhere), or a truncated or extended input,
 * including one shorter than the overhead. Nothing of an unverified plaintext is left in
 * out (wiped). FED_EINVAL naming out_cap when it is too small; FED_EINTERNAL if OpenSSL
 * fails. */
fed_err fed_sa_open(uint8_t *out, size_t out_cap, const uint8_t key[FED_SA_KEY_LEN],
                    uint32_t sender, uint32_t recipient, uint64_t round, const uint8_t *sealed,
                    size_t sealed_len) FED_MUST_USE;

#endif
