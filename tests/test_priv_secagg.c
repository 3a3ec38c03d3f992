/* Tests of the secure aggregation primitives: published test vectors (RFC 7748 X25519,
 * SP 800-38A AES-256-CTR), vectors computed independently with Python's `cryptography`
 * (HKDF info layout, sealed envelope layout), exact cancellation of masks mod 2^32, a whole
 * masked sum with a dropout recovered from Shamir shares, the fixed-point error bound and
 * unbiasedness, Shamir thresholds and tampering, AEAD tampering, and a chi-square sanity
 * check that a masked update looks uniform. */
#include "privacy/secagg_crypto.h"
#include "tests/test.h"

#include "core/alloc_internal.h"

#include <float.h>
#include <stdint.h>
#include <stdlib.h>

static unsigned nibble(char c) {
    return c >= 'a' ? (unsigned)(c - 'a' + 10) : (unsigned)(c - '0');
}

/* Lower-case hex (2n digits) into out[0..n). */
static void unhex(uint8_t *out, const char *hex, size_t n) {
    for (size_t i = 0; i < n; i++)
        out[i] = (uint8_t)(nibble(hex[2 * i]) << 4 | nibble(hex[2 * i + 1]));
}

static uint32_t *random_words(size_t n) {
    uint32_t *v = malloc(n * sizeof *v);
    if (v != NULL && fed_sa_random_bytes((uint8_t *)v, n * sizeof *v) != FED_OK) abort();
    return v;
}

static void key_of(uint8_t key[FED_SA_KEY_LEN], uint8_t tag) {
    for (int i = 0; i < FED_SA_KEY_LEN; i++) key[i] = (uint8_t)(tag * 31 + i);
}

/* ---- Key agreement ------------------------------------------------------------------ */

static const char *alice_secret =
    "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a";
static const char *alice_public =
    "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";
static const char *bob_secret = "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb";
static const char *bob_public = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f";
static const char *rfc_shared = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742";

TEST(x25519_rfc7748) {
    uint8_t a[32], b[32], want[32], shared[32];
    fed_sa_keypair ka, kb;
    unhex(a, alice_secret, 32);
    unhex(b, bob_secret, 32);
    CHECK_OK(fed_sa_keypair_from_secret(&ka, a));
    CHECK_OK(fed_sa_keypair_from_secret(&kb, b));
    unhex(want, alice_public, 32);
    CHECK_MEM(ka.pub, want, 32);
    CHECK_MEM(ka.secret, a, 32);
    unhex(want, bob_public, 32);
    CHECK_MEM(kb.pub, want, 32);
    unhex(want, rfc_shared, 32);
    CHECK_OK(fed_sa_x25519(shared, a, kb.pub));
    CHECK_MEM(shared, want, 32);
    CHECK_OK(fed_sa_x25519(shared, b, ka.pub));
    CHECK_MEM(shared, want, 32);
    CHECK_OK(fed_sa_keypair_from_secret(&ka, ka.secret)); /* aliasing is allowed */
    unhex(want, alice_public, 32);
    CHECK_MEM(ka.pub, want, 32);
}

TEST(x25519_rejects_low_order_points) {
    fed_sa_keypair kp;
    CHECK_OK(fed_sa_keypair_new(&kp));
    uint8_t zero[32] = {0}, one[32] = {1}, shared[32], key[32];
    memset(shared, 0xaa, sizeof shared);
    CHECK_ERR(fed_sa_x25519(shared, kp.secret, zero), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "peer_public");
    CHECK_MEM(shared, zero, 32); /* wiped */
    CHECK_ERR(fed_sa_x25519(shared, kp.secret, one), FED_EINVAL);
    fed_sa_context ctx = {1, 1, 2, "mask"};
    CHECK_ERR(fed_sa_agree(key, kp.secret, zero, &ctx), FED_EINVAL);
    fed_sa_wipe(&kp, sizeof kp);
}

TEST(agree_matches_independent_hkdf) {
    /* HKDF-SHA256 with this file's info layout, computed with Python's cryptography. */
    uint8_t a[32], b[32], key_a[32], key_b[32], want[32];
    fed_sa_keypair ka, kb;
    unhex(a, alice_secret, 32);
    unhex(b, bob_secret, 32);
    CHECK_OK(fed_sa_keypair_from_secret(&ka, a));
    CHECK_OK(fed_sa_keypair_from_secret(&kb, b));
    unhex(want, "0f77ca0a28b7ad4dd848be583981747f425520513018f5d8b39061121d56e1a2", 32);
    fed_sa_context ca = {7, 1, 2, "mask"}, cb = {7, 2, 1, "mask"};
    CHECK_OK(fed_sa_agree(key_a, a, kb.pub, &ca));
    CHECK_OK(fed_sa_agree(key_b, b, ka.pub, &cb));
    CHECK_MEM(key_a, want, 32);
    CHECK_MEM(key_b, want, 32);
}

TEST(agree_is_symmetric_and_bound_to_its_context) {
    fed_sa_keypair u, v, w;
    CHECK_OK(fed_sa_keypair_new(&u));
    CHECK_OK(fed_sa_keypair_new(&v));
    CHECK_OK(fed_sa_keypair_new(&w));
    uint8_t ku[32], kv[32], other[32];
    fed_sa_context cu = {12, 3, 9, "mask"}, cv = {12, 9, 3, "mask"};
    CHECK_OK(fed_sa_agree(ku, u.secret, v.pub, &cu));
    CHECK_OK(fed_sa_agree(kv, v.secret, u.pub, &cv));
    CHECK_MEM(ku, kv, 32);

    fed_sa_context changed[] = {
        {13, 3, 9, "mask"},  /* another round */
        {12, 3, 9, "share"}, /* another purpose */
        {12, 3, 8, "mask"},  /* another peer id */
        {12, 4, 9, "mask"},  /* another own id */
    };
    for (size_t i = 0; i < sizeof changed / sizeof *changed; i++) {
        CHECK_OK(fed_sa_agree(other, u.secret, v.pub, &changed[i]));
        CHECK(memcmp(other, ku, 32) != 0);
    }
    CHECK_OK(fed_sa_agree(other, u.secret, w.pub, &cu)); /* another pair */
    CHECK(memcmp(other, ku, 32) != 0);

    fed_sa_context bad = {12, 3, 3, "mask"};
    CHECK_ERR(fed_sa_agree(other, u.secret, v.pub, &bad), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "peer_id");
    fed_sa_context no_purpose = {12, 3, 9, NULL}, empty = {12, 3, 9, ""},
                   long_purpose = {12, 3, 9, "a purpose label longer than 32 by"};
    CHECK_ERR(fed_sa_agree(other, u.secret, v.pub, &no_purpose), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "purpose");
    CHECK_ERR(fed_sa_agree(other, u.secret, v.pub, &empty), FED_EINVAL);
    CHECK_ERR(fed_sa_agree(other, u.secret, v.pub, &long_purpose), FED_EINVAL);
    fed_sa_wipe(&u, sizeof u);
    fed_sa_wipe(&v, sizeof v);
    fed_sa_wipe(&w, sizeof w);
}

TEST(keypairs_are_fresh) {
    fed_sa_keypair a, b;
    CHECK_OK(fed_sa_keypair_new(&a));
    CHECK_OK(fed_sa_keypair_new(&b));
    CHECK(memcmp(a.secret, b.secret, 32) != 0);
    CHECK(memcmp(a.pub, b.pub, 32) != 0);
    fed_sa_keypair again;
    CHECK_OK(fed_sa_keypair_from_secret(&again, a.secret));
    CHECK_MEM(again.pub, a.pub, 32);
}

/* ---- Masks -------------------------------------------------------------------------- */

TEST(keystream_sp800_38a_ctr_aes256) {
    /* SP 800-38A F.5.5 CTR-AES256.Encrypt: keystream = ciphertext XOR plaintext. */
    uint8_t key[32], iv[16], pt[64], ct[64], ks[64];
    unhex(key, "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4", 32);
    unhex(iv, "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff", 16);
    unhex(pt,
          "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"
          "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710",
          64);
    unhex(ct,
          "601ec313775789a5b7a7f504bbf3d228f443e3ca4d62b59aca84e990cacaf5c5"
          "2b0930daa23de94ce87017ba2d84988ddfc9c58db67aada613c2dd08457941a6",
          64);
    CHECK_OK(fed_sa_keystream(ks, sizeof ks, key, iv));
    for (int i = 0; i < 64; i++) ct[i] ^= pt[i];
    CHECK_MEM(ks, ct, 64);
}

TEST(mask_is_the_keystream_as_le_words) {
    uint8_t key[32], iv[16], want_iv[16];
    unhex(key, "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4", 32);
    fed_sa_mask_iv(iv, UINT64_C(0x0102030405060708));
    unhex(want_iv, "01020304050607080000000000000000", 16);
    CHECK_MEM(iv, want_iv, 16);

    /* Over several chunks, so the streaming must join its blocks exactly. */
    size_t n = 100003;
    uint8_t *ks = malloc(4 * n);
    uint32_t *v = calloc(n, sizeof *v);
    CHECK_OK(fed_sa_keystream(ks, 4 * n, key, iv));
    CHECK_OK(fed_sa_mask_add(v, n, key, UINT64_C(0x0102030405060708), +1));
    size_t same = 0;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *b = ks + 4 * i;
        uint32_t w = b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
        same += v[i] == w;
    }
    CHECK_SIZE(same, n);
    free(ks);
    free(v);
}

TEST(masks_cancel_exactly) {
    const size_t sizes[] = {1, 3, 4, 1000, 100003};
    uint8_t key[32];
    key_of(key, 1);
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        size_t n = sizes[s];
        uint32_t *v = random_words(n), *orig = malloc(n * sizeof *orig);
        memcpy(orig, v, n * sizeof *v);
        CHECK_OK(fed_sa_mask_add(v, n, key, 5, +1));
        size_t changed = 0;
        for (size_t i = 0; i < n; i++) changed += v[i] != orig[i];
        CHECK(changed + 1 >= n);                     /* a word left unchanged has chance 2^-32 */
        CHECK_OK(fed_sa_mask_add(v, n, key, 6, +1)); /* another round's mask */
        CHECK_OK(fed_sa_mask_add(v, n, key, 5, -1));
        CHECK_OK(fed_sa_mask_add(v, n, key, 6, -1));
        CHECK_MEM(v, orig, n * sizeof *v);
        free(v);
        free(orig);
    }
    uint32_t one = 0;
    CHECK_ERR(fed_sa_mask_add(&one, 1, key, 5, 2), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "sign");
    CHECK_ERR(fed_sa_mask_add(&one, 1, key, 5, 0), FED_EINVAL);
    CHECK_OK(fed_sa_mask_add(NULL, 0, key, 5, 1));
}

/* Client u's contribution: y = x + mask(b_u) + sum over v != u of +-mask(agree(u, v)). */
static void mask_client(uint32_t *y, size_t dim, size_t u, size_t n, const fed_sa_keypair *kp,
                        uint8_t (*seed)[32], uint64_t round) {
    CHECK_OK(fed_sa_mask_add(y, dim, seed[u], round, +1));
    for (size_t v = 0; v < n; v++) {
        if (v == u) continue;
        uint8_t key[32];
        fed_sa_context ctx = {round, (uint32_t)u + 1, (uint32_t)v + 1, "mask"};
        CHECK_OK(fed_sa_agree(key, kp[u].secret, kp[v].pub, &ctx));
        CHECK_OK(fed_sa_mask_add(y, dim, key, round, u < v ? +1 : -1));
        fed_sa_wipe(key, sizeof key);
    }
}

TEST(pairwise_masks_cancel_in_the_sum) {
    const size_t dim = 1003;
    const uint64_t round = 41;
    for (size_t n = 3; n <= 10; n++) {
        fed_sa_keypair kp[10];
        uint8_t seed[10][32];
        uint32_t *sum = calloc(dim, sizeof *sum), *plain = calloc(dim, sizeof *plain);
        for (size_t u = 0; u < n; u++) {
            CHECK_OK(fed_sa_keypair_new(&kp[u]));
            CHECK_OK(fed_sa_random_bytes(seed[u], 32));
        }
        for (size_t u = 0; u < n; u++) {
            uint32_t *y = random_words(dim);
            for (size_t i = 0; i < dim; i++) plain[i] += y[i];
            mask_client(y, dim, u, n, kp, seed, round);
            for (size_t i = 0; i < dim; i++) sum[i] += y[i];
            free(y);
        }
        CHECK(memcmp(sum, plain, dim * sizeof *sum) != 0);
        for (size_t u = 0; u < n; u++) CHECK_OK(fed_sa_mask_add(sum, dim, seed[u], round, -1));
        CHECK_MEM(sum, plain, dim * sizeof *sum);
        free(sum);
        free(plain);
        fed_sa_wipe(kp, sizeof kp);
        fed_sa_wipe(seed, sizeof seed);
    }
}

/* Sends every share of client u's secret to its holder through sealed envelopes;
 * held[v][u] is what holder v opened. */
static void deal(fed_sa_share held[][5], const uint8_t secret[32], size_t u, size_t n, size_t t,
                 const fed_sa_keypair *kp, uint64_t round) {
    fed_sa_share sh[5];
    uint32_t xs[5];
    for (size_t v = 0; v < n; v++) xs[v] = (uint32_t)v + 1;
    CHECK_OK(fed_sa_shamir_split(sh, secret, t, n, xs));
    for (size_t v = 0; v < n; v++) {
        uint8_t ku[32], kv[32], wire[FED_SA_SHARE_BYTES], sealed[FED_SA_SHARE_BYTES + 28];
        uint8_t opened[FED_SA_SHARE_BYTES];
        if (v == u) {
            held[v][u] = sh[v];
            continue;
        }
        fed_sa_context cu = {round, (uint32_t)u + 1, (uint32_t)v + 1, "share"};
        fed_sa_context cv = {round, (uint32_t)v + 1, (uint32_t)u + 1, "share"};
        CHECK_OK(fed_sa_agree(ku, kp[u].secret, kp[v].pub, &cu));
        CHECK_OK(fed_sa_agree(kv, kp[v].secret, kp[u].pub, &cv));
        fed_sa_share_encode(wire, &sh[v]);
        CHECK_OK(fed_sa_seal(sealed, sizeof sealed, ku, cu.self_id, cu.peer_id, round, wire,
                             sizeof wire));
        CHECK_OK(fed_sa_open(opened, sizeof opened, kv, cu.self_id, cu.peer_id, round, sealed,
                             sizeof sealed));
        CHECK_OK(fed_sa_share_decode(&held[v][u], opened));
    }
    fed_sa_wipe(sh, sizeof sh);
}

TEST(dropout_is_recovered_from_shares) {
    /* 5 clients, threshold 3, all pairs; client 4 (index 3) shares its secrets and drops
     * before sending its masked update. */
    enum { N = 5, T = 3, DROP = 3 };
    const size_t dim = 517;
    const uint64_t round = 9;
    fed_sa_keypair kp[N];
    uint8_t seed[N][32];
    fed_sa_share seed_held[N][N], secret_held[N][N]; /* [holder][owner] */
    for (size_t u = 0; u < N; u++) {
        CHECK_OK(fed_sa_keypair_new(&kp[u]));
        CHECK_OK(fed_sa_random_bytes(seed[u], 32));
    }
    for (size_t u = 0; u < N; u++) {
        deal(seed_held, seed[u], u, N, T, kp, round);
        deal(secret_held, kp[u].secret, u, N, T, kp, round);
    }
    uint32_t *sum = calloc(dim, sizeof *sum), *plain = calloc(dim, sizeof *plain);
    for (size_t u = 0; u < N; u++) {
        if (u == DROP) continue;
        uint32_t *y = random_words(dim);
        for (size_t i = 0; i < dim; i++) plain[i] += y[i];
        mask_client(y, dim, u, N, kp, seed, round);
        for (size_t i = 0; i < dim; i++) sum[i] += y[i];
        free(y);
    }
    /* The coordinator collects, from the survivors, seed shares of survivors and secret
     * shares of the dropped client. */
    for (size_t u = 0; u < N; u++) {
        fed_sa_share got[N];
        size_t m = 0;
        for (size_t v = 0; v < N; v++)
            if (v != DROP) got[m++] = u == DROP ? secret_held[v][u] : seed_held[v][u];
        uint8_t rebuilt[32];
        CHECK_OK(fed_sa_shamir_combine(rebuilt, got, m, T));
        if (u != DROP) {
            CHECK_MEM(rebuilt, seed[u], 32);
            CHECK_OK(fed_sa_mask_add(sum, dim, rebuilt, round, -1));
            continue;
        }
        fed_sa_keypair dropped;
        CHECK_OK(fed_sa_keypair_from_secret(&dropped, rebuilt));
        CHECK_MEM(dropped.pub, kp[DROP].pub, 32); /* the secret of the advertised key */
        for (size_t v = 0; v < N; v++) {
            if (v == DROP) continue;
            uint8_t key[32];
            fed_sa_context ctx = {round, DROP + 1, (uint32_t)v + 1, "mask"};
            CHECK_OK(fed_sa_agree(key, dropped.secret, kp[v].pub, &ctx));
            CHECK_OK(fed_sa_mask_add(sum, dim, key, round, v < DROP ? -1 : +1));
        }
        fed_sa_wipe(&dropped, sizeof dropped);
    }
    CHECK_MEM(sum, plain, dim * sizeof *sum);
    free(sum);
    free(plain);
    fed_sa_wipe(kp, sizeof kp);
}

/* ---- Fixed point -------------------------------------------------------------------- */

TEST(quantized_sums_are_within_the_rounding_bound) {
    const double c = 8.0;
    const uint32_t q = 1u << 22;
    const size_t dim = 20000, counts[] = {1, 2, 5, 10, 50};
    float *x = malloc(dim * sizeof *x), *out = malloc(dim * sizeof *out);
    uint32_t *y = malloc(dim * sizeof *y), *sum = malloc(dim * sizeof *sum);
    double *truth = malloc(dim * sizeof *truth);
    for (size_t k = 0; k < sizeof counts / sizeof *counts; k++) {
        size_t n = counts[k];
        memset(sum, 0, dim * sizeof *sum);
        memset(truth, 0, dim * sizeof *truth);
        for (size_t u = 0; u < n; u++) {
            uint32_t *r = random_words(dim);
            for (size_t i = 0; i < dim; i++) {
                x[i] = (float)((r[i] / 4294967296.0 - 0.5) * 2.4 * c); /* 20% beyond c */
                double xi = (double)x[i];
                truth[i] += xi < -c ? -c : xi > c ? c : xi;
            }
            free(r);
            uint8_t key[32];
            key_of(key, (uint8_t)(u + 1));
            CHECK_OK(fed_sa_quantize(y, x, dim, c, q, u % 2 ? key : NULL));
            for (size_t i = 0; i < dim; i++) sum[i] += y[i];
        }
        CHECK_OK(fed_sa_dequantize_sum(out, sum, dim, n, c, q));
        /* Each client's rounding moves its value by less than one step of 2c/q. */
        double worst = 0, bound = (double)n * 2 * c / q;
        for (size_t i = 0; i < dim; i++) {
            double err = fabs((double)out[i] - truth[i]) - fabs(truth[i]) * (double)FLT_EPSILON;
            worst = err > worst ? err : worst;
        }
        CHECK(worst <= bound);
        if (worst > bound) fprintf(stderr, "  n %zu: error %.3g > bound %.3g\n", n, worst, bound);
    }
    free(x);
    free(out);
    free(y);
    free(sum);
    free(truth);
}

TEST(stochastic_rounding_is_unbiased) {
    const double c = 8.0;
    const uint32_t q = 1u << 22;
    const size_t n = 200000;
    const float values[] = {-7.99999f, -1.0f / 3, 1e-6f, 0.123456f, 5.5f};
    float *x = malloc(n * sizeof *x);
    uint32_t *y = malloc(n * sizeof *y);
    uint8_t key[32];
    key_of(key, 42);
    for (size_t k = 0; k < sizeof values / sizeof *values; k++) {
        double target = ((double)values[k] + c) * q / (2 * c);
        for (size_t i = 0; i < n; i++) x[i] = values[k];
        CHECK_OK(fed_sa_quantize(y, x, n, c, q, key));
        double mean = 0;
        size_t outside = 0;
        for (size_t i = 0; i < n; i++) {
            mean += y[i];
            outside += y[i] != (uint32_t)floor(target) && y[i] != (uint32_t)ceil(target);
        }
        mean /= (double)n;
        CHECK_SIZE(outside, 0);
        /* The mean of n Bernoulli coins has a standard deviation below 0.5/sqrt(n) =
         * 0.0011 steps; 0.01 steps is 9 of them. */
        CHECK_NEAR(mean, target, 0.01);
    }
    free(x);
    free(y);
}

TEST(quantize_clips_and_checks) {
    const double c = 8.0;
    const uint32_t q = 1u << 22;
    const float x[] = {-100.0f, -8.0f, 0.0f, 8.0f, 100.0f, 3.0e38f, -4.0f};
    const uint32_t want[] = {0, 0, q / 2, q, q, q, q / 4};
    uint32_t y[7];
    float back[7];
    CHECK_OK(fed_sa_quantize(y, x, 7, c, q, NULL));
    for (int i = 0; i < 7; i++) CHECK_INT(y[i], want[i]); /* exact points: no rounding */
    CHECK_OK(fed_sa_dequantize_sum(back, y, 7, 1, c, q));
    CHECK_NEAR(back[0], -8.0, 0);
    CHECK_NEAR(back[4], 8.0, 0);
    CHECK_NEAR(back[2], 0.0, 0);

    const float bad[] = {1.0f, -INFINITY, NAN};
    CHECK_ERR(fed_sa_quantize(y, bad, 3, c, q, NULL), FED_ENONFINITE);
    CHECK_CONTAINS(fed_errmsg(), "x[1]");
    CHECK_ERR(fed_sa_quantize(y, bad + 2, 1, c, q, NULL), FED_ENONFINITE);
    CHECK_ERR(fed_sa_quantize(y, x, 7, 0.0, q, NULL), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "clip_range");
    CHECK_ERR(fed_sa_quantize(y, x, 7, (double)NAN, q, NULL), FED_EINVAL);
    CHECK_ERR(fed_sa_quantize(y, x, 7, c, 0, NULL), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "quant_range");

    CHECK_ERR(fed_sa_dequantize_sum(back, y, 7, 0, c, q), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "num_clients");
    CHECK_ERR(fed_sa_dequantize_sum(back, y, 7, 1024, c, q), FED_ERANGE); /* 2^32 wraps */
    CHECK_CONTAINS(fed_errmsg(), "num_clients");
    CHECK_OK(fed_sa_dequantize_sum(back, y, 7, 1023, c, q));
    uint32_t over[3] = {0, 2 * q, 2 * q + 1};
    CHECK_ERR(fed_sa_dequantize_sum(back, over, 3, 2, c, q), FED_ERANGE);
    CHECK_CONTAINS(fed_errmsg(), "sum[2]");
}

/* ---- Shamir ------------------------------------------------------------------------- */

/* Picks k distinct indices of [0, n) at random into pick. */
static void pick_subset(size_t *pick, size_t k, size_t n) {
    size_t idx[FED_SA_SHARES_MAX];
    for (size_t i = 0; i < n; i++) idx[i] = i;
    for (size_t i = 0; i < k; i++) {
        uint32_t r;
        CHECK_OK(fed_sa_random_bytes((uint8_t *)&r, sizeof r));
        size_t j = i + r % (n - i);
        size_t tmp = idx[i];
        idx[i] = idx[j];
        idx[j] = tmp;
        pick[i] = idx[i];
    }
}

TEST(shamir_any_t_shares_rebuild_the_secret) {
    const size_t cases[][2] = {{1, 1}, {1, 5},  {2, 3},   {3, 5},
                               {5, 5}, {7, 10}, {10, 10}, {40, 100}};
    fed_sa_share sh[100], got[100];
    uint8_t secret[32], back[32];
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        size_t t = cases[c][0], n = cases[c][1];
        CHECK_OK(fed_sa_random_bytes(secret, 32));
        if (c == 1) memset(secret, 0xff, 32); /* every word the largest 32-bit value */
        if (c == 2) memset(secret, 0, 32);
        CHECK_OK(fed_sa_shamir_split(sh, secret, t, n, NULL));
        for (size_t i = 0; i < n; i++) CHECK_INT(sh[i].x, i + 1);
        for (int trial = 0; trial < 5; trial++) {
            size_t pick[100];
            pick_subset(pick, t, n);
            for (size_t i = 0; i < t; i++) got[i] = sh[pick[i]];
            CHECK_OK(fed_sa_shamir_combine(back, got, t, t));
            CHECK_MEM(back, secret, 32);
        }
        CHECK_OK(fed_sa_shamir_combine(back, sh, n, t)); /* all n: the extras must agree */
        CHECK_MEM(back, secret, 32);
    }
    /* Chosen x coordinates: the holders' ids. */
    const uint32_t xs[] = {17, 3, 999, 65536, 4000000000u};
    CHECK_OK(fed_sa_shamir_split(sh, secret, 3, 5, xs));
    CHECK_INT(sh[3].x, 65536);
    CHECK_OK(fed_sa_shamir_combine(back, sh + 2, 3, 3));
    CHECK_MEM(back, secret, 32);
}

TEST(shamir_too_few_shares_are_refused_or_detected) {
    fed_sa_share sh[5];
    uint8_t secret[32], back[32], zero[32] = {0};
    CHECK_OK(fed_sa_random_bytes(secret, 32));
    CHECK_OK(fed_sa_shamir_split(sh, secret, 3, 5, NULL));
    CHECK_ERR(fed_sa_shamir_combine(back, sh, 2, 3), FED_EINVAL); /* the caller knows t */
    CHECK_CONTAINS(fed_errmsg(), "count");
    /* t understated: a line through 2 points of a parabola meets x = 0 at a uniform field
     * element, not below 2^32 in any of the 8 words but with chance 2^-232. */
    for (size_t start = 0; start < 4; start++) {
        memset(back, 0x55, sizeof back);
        CHECK_ERR(fed_sa_shamir_combine(back, sh + start, 2, 2), FED_EAUTH);
        CHECK_MEM(back, zero, 32); /* wiped */
    }
    CHECK_ERR(fed_sa_shamir_combine(back, sh, 1, 1), FED_EAUTH);
}

TEST(shamir_detects_a_tampered_share) {
    fed_sa_share sh[5], bad[5];
    uint8_t secret[32], back[32];
    CHECK_OK(fed_sa_random_bytes(secret, 32));
    CHECK_OK(fed_sa_shamir_split(sh, secret, 3, 5, NULL));
    for (size_t victim = 0; victim < 5; victim++) {
        for (size_t j = 0; j < FED_SA_SHARE_WORDS; j += 7) {
            memcpy(bad, sh, sizeof bad);
            bad[victim].y[j] ^= 1;
            /* All 5 given: the 2 extras check the first 3. */
            CHECK_ERR(fed_sa_shamir_combine(back, bad, 5, 3), FED_EAUTH);
            CHECK_CONTAINS(fed_errmsg(), "does not lie on the polynomial");
            /* Only 4 given, the tampered one among them. */
            fed_sa_share four[4];
            size_t m = 0;
            for (size_t i = 0; i < 5; i++)
                if (i != (victim + 1) % 5) four[m++] = bad[i];
            CHECK_ERR(fed_sa_shamir_combine(back, four, 4, 3), FED_EAUTH);
        }
    }
    memcpy(bad, sh, sizeof bad);
    bad[4].x = 6; /* a share relabelled to another holder */
    CHECK_ERR(fed_sa_shamir_combine(back, bad, 5, 3), FED_EAUTH);
    CHECK_CONTAINS(fed_errmsg(), "shares[4]");
}

TEST(shamir_rejects_malformed_arguments) {
    static fed_sa_share sh[FED_SA_SHARES_MAX];
    uint8_t secret[32] = {1, 2, 3}, back[32];
    CHECK_ERR(fed_sa_shamir_split(sh, secret, 0, 5, NULL), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "t:");
    CHECK_ERR(fed_sa_shamir_split(sh, secret, 6, 5, NULL), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "t:");
    CHECK_ERR(fed_sa_shamir_split(sh, secret, 1, 0, NULL), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "n:");
    CHECK_ERR(fed_sa_shamir_split(sh, secret, 3, FED_SA_SHARES_MAX + 1, NULL), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "n:");
    CHECK_OK(fed_sa_shamir_split(sh, secret, FED_SA_SHARES_MAX, FED_SA_SHARES_MAX, NULL));
    CHECK_OK(fed_sa_shamir_combine(back, sh, FED_SA_SHARES_MAX, FED_SA_SHARES_MAX));
    CHECK_MEM(back, secret, 32);
    const uint32_t dup[] = {4, 5, 4}, zero_x[] = {1, 0, 2};
    CHECK_ERR(fed_sa_shamir_split(sh, secret, 2, 3, dup), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "xs[2]");
    CHECK_ERR(fed_sa_shamir_split(sh, secret, 2, 3, zero_x), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "xs[1]");

    CHECK_OK(fed_sa_shamir_split(sh, secret, 2, 3, NULL));
    CHECK_ERR(fed_sa_shamir_combine(back, sh, 3, 0), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "t:");
    fed_sa_share twice[3] = {sh[0], sh[1], sh[0]};
    CHECK_ERR(fed_sa_shamir_combine(back, twice, 3, 2), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "shares[2]");
    fed_sa_share big[2] = {sh[0], sh[1]};
    big[1].y[3] = FED_SA_PRIME;
    CHECK_ERR(fed_sa_shamir_combine(back, big, 2, 2), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "shares[1]");
    big[1] = sh[1];
    big[0].x = 0;
    CHECK_ERR(fed_sa_shamir_combine(back, big, 2, 2), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "shares[0]");
}

TEST(shamir_fails_cleanly_without_memory) {
    fed_sa_share sh[4];
    uint8_t secret[32] = {9}, back[32], zero[32] = {0};
    fed_alloc_fail_at(1);
    CHECK_ERR(fed_sa_shamir_split(sh, secret, 3, 4, NULL), FED_ENOMEM);
    fed_alloc_fail_at(0);
    CHECK_OK(fed_sa_shamir_split(sh, secret, 3, 4, NULL));
    fed_alloc_fail_at(1);
    CHECK_ERR(fed_sa_shamir_combine(back, sh, 4, 3), FED_ENOMEM);
    CHECK_MEM(back, zero, 32);
    fed_alloc_fail_at(0);
    CHECK_OK(fed_sa_shamir_combine(back, sh, 4, 3));
    CHECK_MEM(back, secret, 32);
}

TEST(share_wire_form) {
    fed_sa_share sh[2], back;
    uint8_t secret[32], wire[FED_SA_SHARE_BYTES];
    CHECK_OK(fed_sa_random_bytes(secret, 32));
    CHECK_OK(fed_sa_shamir_split(sh, secret, 2, 2, NULL));
    fed_sa_share_encode(wire, &sh[1]);
    CHECK_INT(wire[0], 2);
    CHECK_INT(wire[1] | wire[2] | wire[3], 0);
    CHECK_OK(fed_sa_share_decode(&back, wire));
    CHECK_INT(back.x, sh[1].x);
    CHECK_MEM(back.y, sh[1].y, sizeof back.y);
    uint8_t bad[FED_SA_SHARE_BYTES];
    memcpy(bad, wire, sizeof bad);
    memset(bad, 0, 4);
    CHECK_ERR(fed_sa_share_decode(&back, bad), FED_EFORMAT);
    memcpy(bad, wire, sizeof bad);
    memset(bad + 4 + 8 * 5, 0xff, 8); /* y[5] = 2^64 - 1 */
    CHECK_ERR(fed_sa_share_decode(&back, bad), FED_EFORMAT);
    CHECK_CONTAINS(fed_errmsg(), "y[5]");
}

/* ---- Sealing ------------------------------------------------------------------------ */

TEST(open_accepts_an_independent_envelope) {
    /* AES-256-GCM with this file's nonce || ciphertext || tag and associated data layout,
     * made with Python's cryptography: sender 3, recipient 5, round 42. */
    uint8_t key[32], sealed[41], out[13];
    for (int i = 0; i < 32; i++) key[i] = (uint8_t)(i + 1);
    unhex(sealed,
          "a0a1a2a3a4a5a6a7a8a9aaabdfb4591288db3f240c66c3199496a7c324d5a4befb8cfc23d5473c244a", 41);
    CHECK_OK(fed_sa_open(out, sizeof out, key, 3, 5, 42, sealed, sizeof sealed));
    CHECK_MEM(out, "fedtune share", 13);
}

TEST(seal_open_round_trip_and_tampering) {
    uint8_t key[32], msg[FED_SA_SHARE_BYTES], sealed[FED_SA_SHARE_BYTES + 28], again[96];
    uint8_t out[FED_SA_SHARE_BYTES], zero[FED_SA_SHARE_BYTES] = {0};
    key_of(key, 7);
    CHECK_OK(fed_sa_random_bytes(msg, sizeof msg));
    CHECK_OK(fed_sa_seal(sealed, sizeof sealed, key, 3, 5, 42, msg, sizeof msg));
    CHECK_OK(fed_sa_open(out, sizeof out, key, 3, 5, 42, sealed, sizeof sealed));
    CHECK_MEM(out, msg, sizeof msg);
    CHECK_OK(fed_sa_seal(again, sizeof again, key, 3, 5, 42, msg, sizeof msg));
    CHECK(memcmp(again, sealed, sizeof sealed) != 0); /* fresh nonce each time */

    size_t rejected = 0, wiped = 0;
    for (size_t bit = 0; bit < 8 * sizeof sealed; bit++) {
        sealed[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        memset(out, 0x55, sizeof out);
        rejected += fed_sa_open(out, sizeof out, key, 3, 5, 42, sealed, sizeof sealed) == FED_EAUTH;
        wiped += memcmp(out, zero, sizeof out) == 0;
        sealed[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
    CHECK_SIZE(rejected, 8 * sizeof sealed);
    CHECK_SIZE(wiped, 8 * sizeof sealed);

    uint8_t other[32];
    key_of(other, 8);
    CHECK_ERR(fed_sa_open(out, sizeof out, key, 3, 5, 43, sealed, sizeof sealed), FED_EAUTH);
    CHECK_CONTAINS(fed_errmsg(), "round 43");
    CHECK_ERR(fed_sa_open(out, sizeof out, key, 5, 3, 42, sealed, sizeof sealed), FED_EAUTH);
    CHECK_ERR(fed_sa_open(out, sizeof out, key, 4, 5, 42, sealed, sizeof sealed), FED_EAUTH);
    CHECK_ERR(fed_sa_open(out, sizeof out, key, 3, 6, 42, sealed, sizeof sealed), FED_EAUTH);
    CHECK_ERR(fed_sa_open(out, sizeof out, other, 3, 5, 42, sealed, sizeof sealed), FED_EAUTH);
    size_t short_rejected = 0;
    for (size_t len = 0; len < sizeof sealed; len++)
        short_rejected += fed_sa_open(out, sizeof out, key, 3, 5, 42, sealed, len) == FED_EAUTH;
    CHECK_SIZE(short_rejected, sizeof sealed);
    uint8_t longer[sizeof sealed + 1], longer_out[sizeof out + 1];
    memcpy(longer, sealed, sizeof sealed);
    longer[sizeof sealed] = 0;
    CHECK_ERR(fed_sa_open(longer_out, sizeof longer_out, key, 3, 5, 42, longer, sizeof longer),
              FED_EAUTH);
    CHECK_OK(fed_sa_open(out, sizeof out, key, 3, 5, 42, sealed, sizeof sealed));

    CHECK_ERR(fed_sa_open(out, sizeof out - 1, key, 3, 5, 42, sealed, sizeof sealed), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "out_cap");
    CHECK_ERR(fed_sa_seal(again, sizeof msg + 27, key, 3, 5, 42, msg, sizeof msg), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "out_cap");

    uint8_t empty[28];
    CHECK_OK(fed_sa_seal(empty, sizeof empty, key, 1, 2, 3, NULL, 0));
    CHECK_OK(fed_sa_open(NULL, 0, key, 1, 2, 3, empty, sizeof empty));
    empty[27] ^= 0x80;
    CHECK_ERR(fed_sa_open(NULL, 0, key, 1, 2, 3, empty, sizeof empty), FED_EAUTH);
}

/* ---- Statistics --------------------------------------------------------------------- */

/* Pearson's chi-square of the byte values of p[0..n) against uniform (255 degrees of
 * freedom: mean 255, standard deviation 22.6). */
static double byte_chi_square(const uint8_t *p, size_t n) {
    double count[256] = {0}, expected = (double)n / 256, chi = 0;
    for (size_t i = 0; i < n; i++) count[p[i]]++;
    for (int b = 0; b < 256; b++) chi += (count[b] - expected) * (count[b] - expected) / expected;
    return chi;
}

TEST(masked_update_bytes_look_uniform) {
    const size_t n = 1 << 18;     /* 1 MB of words */
    const double threshold = 400; /* 6.4 standard deviations above the mean */
    float *x = malloc(n * sizeof *x);
    uint32_t *y = malloc(n * sizeof *y);
    for (size_t i = 0; i < n; i++) x[i] = (float)sin((double)i) * 0.01f; /* a small delta */
    uint8_t rng_key[32], seed[32];
    key_of(rng_key, 3);
    key_of(seed, 4);
    CHECK_OK(fed_sa_quantize(y, x, n, 8.0, 1u << 22, rng_key));
    double plain = byte_chi_square((const uint8_t *)y, 4 * n);
    CHECK_OK(fed_sa_mask_add(y, n, seed, 1, +1));
    double masked = byte_chi_square((const uint8_t *)y, 4 * n);
    CHECK(masked < threshold);
    CHECK(plain > threshold);
    fprintf(stderr, "  chi-square: masked %.1f, quantized only %.3g (threshold %.0f)\n", masked,
            plain, threshold);
    free(x);
    free(y);
}

int main(void) {
    RUN(x25519_rfc7748);
    RUN(x25519_rejects_low_order_points);
    RUN(agree_matches_independent_hkdf);
    RUN(agree_is_symmetric_and_bound_to_its_context);
    RUN(keypairs_are_fresh);
    RUN(keystream_sp800_38a_ctr_aes256);
    RUN(mask_is_the_keystream_as_le_words);
    RUN(masks_cancel_exactly);
    RUN(pairwise_masks_cancel_in_the_sum);
    RUN(dropout_is_recovered_from_shares);
    RUN(quantized_sums_are_within_the_rounding_bound);
    RUN(stochastic_rounding_is_unbiased);
    RUN(quantize_clips_and_checks);
    RUN(shamir_any_t_shares_rebuild_the_secret);
    RUN(shamir_too_few_shares_are_refused_or_detected);
    RUN(shamir_detects_a_tampered_share);
    RUN(shamir_rejects_malformed_arguments);
    RUN(shamir_fails_cleanly_without_memory);
    RUN(share_wire_form);
    RUN(open_accepts_an_independent_envelope);
    RUN(seal_open_round_trip_and_tampering);
    RUN(masked_update_bytes_look_uniform);
    return test_report();
}
