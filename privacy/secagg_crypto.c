/* Secure aggregation primitives on OpenSSL 3's libcrypto (see secagg_crypto.h): X25519
 * and HKDF through EVP_PKEY and EVP_KDF, AES-256-CTR streams and AES-256-GCM through
 * EVP_CIPHER, RAND_bytes for every random value, and the small amount of field arithmetic
 * Shamir sharing needs, done here in 128-bit integers. No round logic, no I/O, no
 * allocation proportional to a model's size: masks and rounding coins stream through one
 * stack buffer that is wiped afterwards. */
#include "privacy/secagg_crypto.h"

#include "core/alloc.h"
#include "core/endian.h"

#include <limits.h>
#include <math.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <stdbool.h>
#include <string.h>

#define CHUNK     4096       /* keystream bytes per EVP call when streaming */
#define NONCE_LEN 12         /* AES-GCM nonce */
#define TAG_LEN   16         /* AES-GCM tag */
#define SEAL_MAX  (1u << 30) /* largest message fed_sa_seal takes: well below INT_MAX */
#define INFO_MAX  (1 + FED_SA_PURPOSE_MAX + 8 + 2 * (4 + FED_SA_KEY_LEN)) /* HKDF info */
#define P         FED_SA_PRIME

static const char hkdf_salt[] = "fedtune/secagg/v1";
static const char seal_label[] = "fedtune/secagg/seal/v1";
static const char quantize_label[] = "fedtune/quantize"; /* 16 bytes: the coins' IV */

_Static_assert(sizeof quantize_label - 1 == FED_SA_IV_LEN, "quantize IV is one block");
_Static_assert(FED_SA_SHARE_BYTES == 4 + 8 * FED_SA_SHARE_WORDS, "share wire size");
_Static_assert(FED_SA_SECRET_LEN == 4 * FED_SA_SHARE_WORDS, "one 32-bit word per element");
_Static_assert(FED_SA_SEAL_OVERHEAD == NONCE_LEN + TAG_LEN, "seal overhead");

/* ---- Little helpers ----------------------------------------------------------------- */

/* Records OpenSSL's reason for the failure of `what` and empties its error queue. */
static fed_err ossl_fail(const char *what) {
    unsigned long e = ERR_get_error();
    char reason[256] = "no OpenSSL reason";
    if (e != 0) ERR_error_string_n(e, reason, sizeof reason);
    ERR_clear_error();
    return fed_errorf(FED_EINTERNAL, "%s: %s", what, reason);
}

void fed_sa_wipe(void *p, size_t n) {
    if (p != NULL && n > 0) OPENSSL_cleanse(p, n);
}

fed_err fed_sa_random_bytes(uint8_t *out, size_t n) {
    if (n > INT_MAX) return fed_errorf(FED_EINVAL, "n: %zu random bytes asked at once", n);
    if (n > 0 && RAND_bytes(out, (int)n) != 1) return ossl_fail("RAND_bytes");
    return FED_OK;
}

/* ---- Key agreement ------------------------------------------------------------------ */

static fed_err pkey_secret(EVP_PKEY **pk, const uint8_t secret[FED_SA_KEY_LEN]) {
    *pk = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, secret, FED_SA_KEY_LEN);
    return *pk != NULL ? FED_OK : ossl_fail("X25519 secret key");
}

static fed_err pkey_public(EVP_PKEY *pk, uint8_t pub[FED_SA_KEY_LEN]) {
    size_t len = FED_SA_KEY_LEN;
    if (EVP_PKEY_get_raw_public_key(pk, pub, &len) != 1 || len != FED_SA_KEY_LEN)
        return ossl_fail("X25519 public key");
    return FED_OK;
}

fed_err fed_sa_keypair_from_secret(fed_sa_keypair *kp, const uint8_t secret[FED_SA_KEY_LEN]) {
    EVP_PKEY *pk = NULL;
    uint8_t pub[FED_SA_KEY_LEN];
    fed_err err = pkey_secret(&pk, secret);
    if (err == FED_OK) err = pkey_public(pk, pub);
    if (err == FED_OK) {
        memmove(kp->secret, secret, FED_SA_KEY_LEN); /* secret may be kp->secret */
        memcpy(kp->pub, pub, FED_SA_KEY_LEN);
    }
    EVP_PKEY_free(pk); /* wipes its copy of the secret */
    return err;
}

fed_err fed_sa_keypair_new(fed_sa_keypair *kp) {
    uint8_t secret[FED_SA_KEY_LEN];
    fed_err err = fed_sa_random_bytes(secret, sizeof secret);
    if (err == FED_OK) err = fed_sa_keypair_from_secret(kp, secret);
    OPENSSL_cleanse(secret, sizeof secret);
    if (err != FED_OK) OPENSSL_cleanse(kp, sizeof *kp);
    return err;
}

static bool all_zero(const uint8_t *p, size_t n) {
    uint8_t acc = 0;
    for (size_t i = 0; i < n; i++) acc |= p[i]; /* no early exit: constant time */
    return acc == 0;
}

/* X25519(secret, peer_public) into shared, and the secret's public key into my_pub unless
 * it is NULL (one EVP_PKEY serves both). shared is wiped on error. */
static fed_err x25519(uint8_t shared[FED_SA_KEY_LEN], uint8_t *my_pub,
                      const uint8_t secret[FED_SA_KEY_LEN],
                      const uint8_t peer_public[FED_SA_KEY_LEN]) {
    EVP_PKEY *mine = NULL, *peer = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    size_t len = FED_SA_KEY_LEN;
    fed_err err = pkey_secret(&mine, secret);
    if (err != FED_OK) goto fail;
    if (my_pub != NULL && (err = pkey_public(mine, my_pub)) != FED_OK) goto fail;
    peer = EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, NULL, peer_public, FED_SA_KEY_LEN);
    ctx = EVP_PKEY_CTX_new(mine, NULL);
    if (peer == NULL || ctx == NULL || EVP_PKEY_derive_init(ctx) != 1) {
        err = ossl_fail("X25519 set-up");
        goto fail;
    }
    /* OpenSSL refuses a derivation whose result is all zero; check again regardless. */
    if (EVP_PKEY_derive_set_peer(ctx, peer) != 1 || EVP_PKEY_derive(ctx, shared, &len) != 1 ||
        len != FED_SA_KEY_LEN || all_zero(shared, FED_SA_KEY_LEN)) {
        ERR_clear_error();
        err = fed_errorf(FED_EINVAL, "peer_public: X25519 with it gives no secret (a "
                                     "low-order point)");
        goto fail;
    }
fail:
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(peer);
    EVP_PKEY_free(mine);
    if (err != FED_OK) OPENSSL_cleanse(shared, FED_SA_KEY_LEN);
    return err;
}

fed_err fed_sa_x25519(uint8_t shared[FED_SA_KEY_LEN], const uint8_t secret[FED_SA_KEY_LEN],
                      const uint8_t peer_public[FED_SA_KEY_LEN]) {
    return x25519(shared, NULL, secret, peer_public);
}

/* The HKDF info of fed_sa_agree (layout in the header) into info; returns its length. */
static size_t agree_info(uint8_t info[INFO_MAX], const fed_sa_context *ctx,
                         const uint8_t my_pub[FED_SA_KEY_LEN],
                         const uint8_t peer_public[FED_SA_KEY_LEN]) {
    size_t plen = strlen(ctx->purpose), at = 0;
    bool me_first = ctx->self_id < ctx->peer_id;
    info[at++] = (uint8_t)plen;
    memcpy(info + at, ctx->purpose, plen);
    at += plen;
    fed_store_le64(info + at, ctx->round);
    at += 8;
    fed_store_le32(info + at, me_first ? ctx->self_id : ctx->peer_id);
    memcpy(info + at + 4, me_first ? my_pub : peer_public, FED_SA_KEY_LEN);
    at += 4 + FED_SA_KEY_LEN;
    fed_store_le32(info + at, me_first ? ctx->peer_id : ctx->self_id);
    memcpy(info + at + 4, me_first ? peer_public : my_pub, FED_SA_KEY_LEN);
    return at + 4 + FED_SA_KEY_LEN;
}

static fed_err hkdf_sha256(uint8_t out[FED_SA_KEY_LEN], const uint8_t ikm[FED_SA_KEY_LEN],
                           const uint8_t *info, size_t info_len) {
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    EVP_KDF_CTX *kctx = kdf != NULL ? EVP_KDF_CTX_new(kdf) : NULL;
    EVP_KDF_free(kdf); /* the context keeps its own reference */
    if (kctx == NULL) return ossl_fail("HKDF");
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)ikm, FED_SA_KEY_LEN),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)hkdf_salt,
                                          sizeof hkdf_salt - 1),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info, info_len),
        OSSL_PARAM_construct_end(),
    };
    fed_err err = FED_OK;
    if (EVP_KDF_derive(kctx, out, FED_SA_KEY_LEN, params) != 1) err = ossl_fail("HKDF-SHA256");
    EVP_KDF_CTX_free(kctx); /* wipes its copy of the key */
    return err;
}

fed_err fed_sa_agree(uint8_t key[FED_SA_KEY_LEN], const uint8_t secret[FED_SA_KEY_LEN],
                     const uint8_t peer_public[FED_SA_KEY_LEN], const fed_sa_context *ctx) {
    size_t plen = ctx->purpose != NULL ? strlen(ctx->purpose) : 0;
    if (plen == 0 || plen > FED_SA_PURPOSE_MAX)
        return fed_errorf(FED_EINVAL, "ctx->purpose: needs 1 to %d bytes, has %zu",
                          FED_SA_PURPOSE_MAX, plen);
    if (ctx->self_id == ctx->peer_id)
        return fed_errorf(FED_EINVAL, "ctx->peer_id: %u is self_id too", (unsigned)ctx->peer_id);
    uint8_t ikm[FED_SA_KEY_LEN], my_pub[FED_SA_KEY_LEN], info[INFO_MAX];
    fed_err err = x25519(ikm, my_pub, secret, peer_public);
    if (err == FED_OK) {
        size_t info_len = agree_info(info, ctx, my_pub, peer_public);
        err = hkdf_sha256(key, ikm, info, info_len);
    }
    OPENSSL_cleanse(ikm, sizeof ikm);
    if (err != FED_OK) OPENSSL_cleanse(key, FED_SA_KEY_LEN);
    return err;
}

/* ---- AES-256-CTR streams and masks -------------------------------------------------- */

static fed_err ctr_open(EVP_CIPHER_CTX **out, const uint8_t key[FED_SA_KEY_LEN],
                        const uint8_t iv[FED_SA_IV_LEN]) {
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    if (c == NULL || EVP_EncryptInit_ex(c, EVP_aes_256_ctr(), NULL, key, iv) != 1) {
        EVP_CIPHER_CTX_free(c);
        return ossl_fail("AES-256-CTR");
    }
    *out = c;
    return FED_OK;
}

/* The next len (<= CHUNK) keystream bytes into buf: the encryption of zeros. */
static fed_err ctr_next(EVP_CIPHER_CTX *c, uint8_t *buf, size_t len) {
    int outl = 0;
    memset(buf, 0, len);
    if (EVP_EncryptUpdate(c, buf, &outl, buf, (int)len) != 1 || (size_t)outl != len)
        return ossl_fail("AES-256-CTR");
    return FED_OK;
}

void fed_sa_mask_iv(uint8_t iv[FED_SA_IV_LEN], uint64_t round) {
    for (int i = 0; i < 8; i++) iv[i] = (uint8_t)(round >> (56 - 8 * i));
    memset(iv + 8, 0, 8);
}

fed_err fed_sa_keystream(uint8_t *out, size_t len, const uint8_t key[FED_SA_KEY_LEN],
                         const uint8_t iv[FED_SA_IV_LEN]) {
    EVP_CIPHER_CTX *c = NULL;
    fed_err err = ctr_open(&c, key, iv);
    for (size_t at = 0; err == FED_OK && at < len; at += CHUNK)
        err = ctr_next(c, out + at, len - at < CHUNK ? len - at : CHUNK);
    EVP_CIPHER_CTX_free(c); /* wipes the key schedule */
    return err;
}

/* v[i] += sign * (word i of ks) for i < m. */
static void add_words(uint32_t *v, const uint8_t *ks, size_t m, int sign) {
    if (sign > 0) {
        for (size_t i = 0; i < m; i++) v[i] += fed_load_le32(ks + 4 * i);
    } else {
        for (size_t i = 0; i < m; i++) v[i] -= fed_load_le32(ks + 4 * i);
    }
}

fed_err fed_sa_mask_add(uint32_t *v, size_t n, const uint8_t key[FED_SA_KEY_LEN], uint64_t round,
                        int sign) {
    if (sign != 1 && sign != -1) return fed_errorf(FED_EINVAL, "sign: %d, expected +1 or -1", sign);
    if (n > SIZE_MAX / 4) return fed_errorf(FED_EINVAL, "n: %zu words overflow", n);
    uint8_t iv[FED_SA_IV_LEN], buf[CHUNK];
    EVP_CIPHER_CTX *c = NULL;
    fed_sa_mask_iv(iv, round);
    fed_err err = ctr_open(&c, key, iv);
    for (size_t i = 0; err == FED_OK && i < n; i += CHUNK / 4) {
        size_t m = n - i < CHUNK / 4 ? n - i : CHUNK / 4;
        err = ctr_next(c, buf, 4 * m);
        if (err == FED_OK) add_words(v + i, buf, m, sign);
    }
    OPENSSL_cleanse(buf, sizeof buf);
    EVP_CIPHER_CTX_free(c);
    return err;
}

/* ---- Fixed point -------------------------------------------------------------------- */

static fed_err check_fixed_point(double clip_range, uint32_t quant_range) {
    if (!isfinite(clip_range) || clip_range <= 0)
        return fed_errorf(FED_EINVAL, "clip_range: %g, expected finite and > 0", clip_range);
    if (quant_range == 0) return fed_errorf(FED_EINVAL, "quant_range: 0, expected >= 1");
    return FED_OK;
}

/* Stochastic rounding of one clipped value to [0, q]; coin is 32 uniform bits, and
 * P(coin < f * 2^32) = ceil(f * 2^32) / 2^32, within 2^-32 of the fraction f. */
static uint32_t quantize_one(double x, double c, double scale, uint32_t q, uint32_t coin) {
    double xc = x < -c ? -c : x > c ? c : x;
    double y = (xc + c) * scale;
    y = y < 0 ? 0 : y > q ? q : y; /* (2c) * (q / 2c) may round just past q */
    double fl = floor(y);
    uint32_t v = (uint32_t)fl;
    if (v < q && (double)coin < (y - fl) * 4294967296.0) v++;
    return v;
}

fed_err fed_sa_quantize(uint32_t *out, const float *x, size_t n, double clip_range,
                        uint32_t quant_range, const uint8_t *rng_key) {
    fed_err err = check_fixed_point(clip_range, quant_range);
    if (err != FED_OK) return err;
    if (n > SIZE_MAX / 4) return fed_errorf(FED_EINVAL, "n: %zu values overflow", n);
    uint8_t key[FED_SA_KEY_LEN], buf[CHUNK];
    EVP_CIPHER_CTX *c = NULL;
    if (rng_key != NULL) {
        memcpy(key, rng_key, sizeof key);
    } else {
        err = fed_sa_random_bytes(key, sizeof key);
    }
    if (err == FED_OK) err = ctr_open(&c, key, (const uint8_t *)quantize_label);
    const double scale = (double)quant_range / (2.0 * clip_range);
    for (size_t i = 0; err == FED_OK && i < n; i += CHUNK / 4) {
        size_t m = n - i < CHUNK / 4 ? n - i : CHUNK / 4;
        err = ctr_next(c, buf, 4 * m);
        for (size_t j = 0; err == FED_OK && j < m; j++) {
            if (!isfinite(x[i + j])) {
                err = fed_errorf(FED_ENONFINITE, "x[%zu]: %g", i + j, (double)x[i + j]);
                break;
            }
            out[i + j] = quantize_one((double)x[i + j], clip_range, scale, quant_range,
                                      fed_load_le32(buf + 4 * j));
        }
    }
    OPENSSL_cleanse(key, sizeof key);
    OPENSSL_cleanse(buf, sizeof buf);
    EVP_CIPHER_CTX_free(c);
    return err;
}

fed_err fed_sa_dequantize_sum(float *out, const uint32_t *sum, size_t n, size_t num_clients,
                              double clip_range, uint32_t quant_range) {
    fed_err err = check_fixed_point(clip_range, quant_range);
    if (err != FED_OK) return err;
    if (num_clients == 0) return fed_errorf(FED_EINVAL, "num_clients: 0");
    if (num_clients > UINT32_MAX || (uint64_t)num_clients * quant_range > UINT32_MAX)
        return fed_errorf(FED_ERANGE,
                          "num_clients: %zu sums of up to quant_range = %u wrap modulo 2^32",
                          num_clients, (unsigned)quant_range);
    const uint64_t most = (uint64_t)num_clients * quant_range;
    const double step = 2.0 * clip_range / quant_range;
    const double offset = (double)num_clients * clip_range;
    for (size_t i = 0; i < n; i++) {
        if (sum[i] > most)
            return fed_errorf(FED_ERANGE,
                              "sum[%zu]: %u exceeds num_clients * quant_range = %llu (a mask "
                              "not removed?)",
                              i, (unsigned)sum[i], (unsigned long long)most);
        out[i] = (float)((double)sum[i] * step - offset);
    }
    return FED_OK;
}

/* ---- GF(2^61 - 1) ------------------------------------------------------------------- */

__extension__ typedef unsigned __int128 u128;

static uint64_t f_add(uint64_t a, uint64_t b) {
    uint64_t s = a + b; /* < 2^62 */
    return s >= P ? s - P : s;
}

static uint64_t f_sub(uint64_t a, uint64_t b) {
    return a >= b ? a - b : a + P - b;
}

/* 2^61 = 1 (mod p), so the 122-bit product folds into its high and low 61 bits. */
static uint64_t f_mul(uint64_t a, uint64_t b) {
    u128 z = (u128)a * b;
    uint64_t r = ((uint64_t)z & P) + (uint64_t)(z >> 61); /* < 2^62 */
    r = (r & P) + (r >> 61);                              /* <= 2^61 */
    return r >= P ? r - P : r;
}

static uint64_t f_pow(uint64_t a, uint64_t e) {
    uint64_t r = 1;
    for (; e != 0; e >>= 1, a = f_mul(a, a))
        if (e & 1) r = f_mul(r, a);
    return r;
}

/* a[i] = 1 / a[i] for all i < n (each nonzero) with one exponentiation (Montgomery's
 * trick); pre is scratch of n elements. */
static void f_inv_all(uint64_t *a, uint64_t *pre, size_t n) {
    uint64_t acc = 1;
    for (size_t i = 0; i < n; i++) pre[i] = acc = f_mul(acc, a[i]);
    uint64_t inv = f_pow(acc, P - 2); /* Fermat */
    for (size_t i = n; i-- > 1;) {
        uint64_t ai = a[i];
        a[i] = f_mul(inv, pre[i - 1]);
        inv = f_mul(inv, ai);
    }
    a[0] = inv;
}

/* n uniform field elements from RAND_bytes: 61 random bits each, redrawing the one value
 * (2^61 - 1 = p) that is not an element. Byte order is irrelevant for random bytes. */
static fed_err f_random(uint64_t *out, size_t n) {
    fed_err err = fed_sa_random_bytes((uint8_t *)out, n * sizeof *out);
    for (size_t i = 0; err == FED_OK && i < n; i++) {
        out[i] &= P;
        while (err == FED_OK && out[i] == P) {
            err = fed_sa_random_bytes((uint8_t *)&out[i], sizeof *out);
            out[i] &= P;
        }
    }
    return err;
}

/* ---- Shamir ------------------------------------------------------------------------- */

/* Element i of an array of uint32 spaced stride bytes apart (xs, or the x of shares). */
static uint32_t x_at(const void *base, size_t stride, size_t i) {
    uint32_t x;
    memcpy(&x, (const char *)base + i * stride, sizeof x);
    return x;
}

/* FED_EINVAL unless the n points x_at(base, stride, i) are nonzero and distinct; name is
 * "xs" or "shares", for the message. */
static fed_err check_points(const void *base, size_t stride, size_t n, const char *name) {
    for (size_t i = 0; i < n; i++) {
        uint32_t xi = x_at(base, stride, i);
        if (xi == 0) return fed_errorf(FED_EINVAL, "%s[%zu]: x = 0 would be the secret", name, i);
        for (size_t j = 0; j < i; j++)
            if (x_at(base, stride, j) == xi)
                return fed_errorf(FED_EINVAL, "%s[%zu]: x = %u repeats %s[%zu]", name, i,
                                  (unsigned)xi, name, j);
    }
    return FED_OK;
}

static uint64_t horner(const uint64_t *coef, size_t t, uint64_t x) {
    uint64_t y = 0;
    for (size_t k = t; k-- > 0;) y = f_add(f_mul(y, x), coef[k]);
    return y;
}

fed_err fed_sa_shamir_split(fed_sa_share *shares, const uint8_t secret[FED_SA_SECRET_LEN], size_t t,
                            size_t n, const uint32_t *xs) {
    if (n == 0 || n > FED_SA_SHARES_MAX)
        return fed_errorf(FED_EINVAL, "n: %zu, expected 1 to %d", n, FED_SA_SHARES_MAX);
    if (t == 0 || t > n) return fed_errorf(FED_EINVAL, "t: %zu, expected 1 to n = %zu", t, n);
    fed_err err = xs != NULL ? check_points(xs, sizeof *xs, n, "xs") : FED_OK;
    if (err != FED_OK) return err;
    uint64_t *coef = fed_mallocarray(t, sizeof *coef);
    if (coef == NULL) return FED_ENOMEM;
    for (size_t i = 0; i < n; i++) shares[i].x = xs != NULL ? xs[i] : (uint32_t)(i + 1);
    for (size_t j = 0; err == FED_OK && j < FED_SA_SHARE_WORDS; j++) {
        coef[0] = fed_load_le32(secret + 4 * j);
        err = f_random(coef + 1, t - 1);
        for (size_t i = 0; err == FED_OK && i < n; i++)
            shares[i].y[j] = horner(coef, t, shares[i].x);
    }
    OPENSSL_cleanse(coef, t * sizeof *coef);
    fed_free(coef);
    if (err != FED_OK) OPENSSL_cleanse(shares, n * sizeof *shares);
    return err;
}

static fed_err check_shares(const fed_sa_share *shares, size_t count, size_t t) {
    if (t == 0 || t > FED_SA_SHARES_MAX)
        return fed_errorf(FED_EINVAL, "t: %zu, expected 1 to %d", t, FED_SA_SHARES_MAX);
    if (count < t || count > FED_SA_SHARES_MAX)
        return fed_errorf(FED_EINVAL, "count: %zu shares, expected t = %zu to %d", count, t,
                          FED_SA_SHARES_MAX);
    for (size_t i = 0; i < count; i++)
        for (size_t j = 0; j < FED_SA_SHARE_WORDS; j++)
            if (shares[i].y[j] >= P)
                return fed_errorf(FED_EINVAL, "shares[%zu]: y[%zu] is not below p", i, j);
    return check_points(&shares[0].x, sizeof *shares, count, "shares");
}

/* Interpolation through the points x[0..t) in barycentric form. With inv_w[i] =
 * 1 / prod_{m != i} (x_i - x_m), the value at a (not one of the x) of the polynomial
 * through (x_i, y_i) is sum_i y_i * basis[i], basis[i] = l(a) * inv_w[i] / (a - x_i) and
 * l(a) = prod_m (a - x_m). O(t^2) once for inv_w, then O(t) per point a. */
typedef struct interp {
    size_t t;        /* number of points */
    uint64_t *x;     /* (t) the points, as field elements */
    uint64_t *inv_w; /* (t) barycentric weights */
    uint64_t *basis; /* (t) basis values at the last point asked */
    uint64_t *tmp;   /* (t) scratch */
} interp;

static void interp_weights(interp *ip) {
    for (size_t i = 0; i < ip->t; i++) {
        uint64_t w = 1;
        for (size_t m = 0; m < ip->t; m++)
            if (m != i) w = f_mul(w, f_sub(ip->x[i], ip->x[m]));
        ip->inv_w[i] = w;
    }
    f_inv_all(ip->inv_w, ip->tmp, ip->t);
}

static void interp_basis(interp *ip, uint64_t a) {
    uint64_t l = 1;
    for (size_t i = 0; i < ip->t; i++) {
        ip->basis[i] = f_sub(a, ip->x[i]);
        l = f_mul(l, ip->basis[i]);
    }
    f_inv_all(ip->basis, ip->tmp, ip->t);
    for (size_t i = 0; i < ip->t; i++) ip->basis[i] = f_mul(f_mul(l, ip->inv_w[i]), ip->basis[i]);
}

/* Word j of the polynomial through the first t shares, at the point of the last basis. */
static uint64_t interp_value(const interp *ip, const fed_sa_share *shares, size_t j) {
    uint64_t v = 0;
    for (size_t i = 0; i < ip->t; i++) v = f_add(v, f_mul(ip->basis[i], shares[i].y[j]));
    return v;
}

/* FED_EAUTH unless every share after the first t lies on their polynomials. */
static fed_err check_extra(interp *ip, const fed_sa_share *shares, size_t count) {
    for (size_t e = ip->t; e < count; e++) {
        interp_basis(ip, shares[e].x);
        for (size_t j = 0; j < FED_SA_SHARE_WORDS; j++)
            if (interp_value(ip, shares, j) != shares[e].y[j])
                return fed_errorf(FED_EAUTH,
                                  "shares[%zu] (x = %u) does not lie on the polynomial of the "
                                  "first %zu shares: one of them was altered",
                                  e, (unsigned)shares[e].x, ip->t);
    }
    return FED_OK;
}

/* The secret through the first t shares, after checking the rest; mem holds 4t
 * elements. */
static fed_err rebuild(uint8_t secret[FED_SA_SECRET_LEN], const fed_sa_share *shares, size_t count,
                       size_t t, uint64_t *mem) {
    interp ip = {t, mem, mem + t, mem + 2 * t, mem + 3 * t};
    for (size_t i = 0; i < t; i++) ip.x[i] = shares[i].x;
    interp_weights(&ip);
    fed_err err = check_extra(&ip, shares, count);
    if (err != FED_OK) return err;
    interp_basis(&ip, 0);
    for (size_t j = 0; j < FED_SA_SHARE_WORDS; j++) {
        uint64_t s = interp_value(&ip, shares, j);
        if (s > UINT32_MAX)
            return fed_errorf(FED_EAUTH,
                              "the %zu shares rebuild no valid secret: too few for "
                              "the real threshold, or one altered",
                              t);
        fed_store_le32(secret + 4 * j, (uint32_t)s);
    }
    return FED_OK;
}

fed_err fed_sa_shamir_combine(uint8_t secret[FED_SA_SECRET_LEN], const fed_sa_share *shares,
                              size_t count, size_t t) {
    fed_err err = check_shares(shares, count, t);
    uint64_t *mem = err == FED_OK ? fed_mallocarray(4 * t, sizeof *mem) : NULL;
    if (err == FED_OK && mem == NULL) err = FED_ENOMEM;
    if (err == FED_OK) err = rebuild(secret, shares, count, t, mem);
    fed_free(mem);
    if (err != FED_OK) OPENSSL_cleanse(secret, FED_SA_SECRET_LEN);
    return err;
}

void fed_sa_share_encode(uint8_t out[FED_SA_SHARE_BYTES], const fed_sa_share *share) {
    fed_store_le32(out, share->x);
    for (size_t j = 0; j < FED_SA_SHARE_WORDS; j++) fed_store_le64(out + 4 + 8 * j, share->y[j]);
}

fed_err fed_sa_share_decode(fed_sa_share *share, const uint8_t in[FED_SA_SHARE_BYTES]) {
    share->x = fed_load_le32(in);
    if (share->x == 0) return fed_errorf(FED_EFORMAT, "share x: 0");
    for (size_t j = 0; j < FED_SA_SHARE_WORDS; j++) {
        share->y[j] = fed_load_le64(in + 4 + 8 * j);
        if (share->y[j] >= P) return fed_errorf(FED_EFORMAT, "share y[%zu]: not below p", j);
    }
    return FED_OK;
}

/* ---- Sealing ------------------------------------------------------------------------ */

#define AD_LEN (sizeof seal_label - 1 + 4 + 4 + 8)

static void seal_ad(uint8_t ad[AD_LEN], uint32_t sender, uint32_t recipient, uint64_t round) {
    size_t at = sizeof seal_label - 1;
    memcpy(ad, seal_label, at);
    fed_store_le32(ad + at, sender);
    fed_store_le32(ad + at + 4, recipient);
    fed_store_le64(ad + at + 8, round);
}

/* An AES-256-GCM context for enc (1) or dec (0) with its nonce and associated data fed. */
static fed_err gcm_open(EVP_CIPHER_CTX **out, int enc, const uint8_t key[FED_SA_KEY_LEN],
                        const uint8_t nonce[NONCE_LEN], const uint8_t ad[AD_LEN]) {
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int outl = 0;
    if (c == NULL || EVP_CipherInit_ex(c, EVP_aes_256_gcm(), NULL, key, nonce, enc) != 1 ||
        EVP_CipherUpdate(c, NULL, &outl, ad, (int)AD_LEN) != 1) {
        EVP_CIPHER_CTX_free(c);
        return ossl_fail("AES-256-GCM");
    }
    *out = c;
    return FED_OK;
}

fed_err fed_sa_seal(uint8_t *out, size_t out_cap, const uint8_t key[FED_SA_KEY_LEN],
                    uint32_t sender, uint32_t recipient, uint64_t round, const uint8_t *msg,
                    size_t len) {
    if (len > SEAL_MAX) return fed_errorf(FED_EINVAL, "len: %zu bytes, at most 2^30", len);
    if (out_cap < len + FED_SA_SEAL_OVERHEAD)
        return fed_errorf(FED_EINVAL, "out_cap: %zu bytes, needs %zu", out_cap,
                          len + FED_SA_SEAL_OVERHEAD);
    uint8_t ad[AD_LEN], *ct = out + NONCE_LEN;
    EVP_CIPHER_CTX *c = NULL;
    int outl = 0, last = 0;
    seal_ad(ad, sender, recipient, round);
    fed_err err = fed_sa_random_bytes(out, NONCE_LEN);
    if (err == FED_OK) err = gcm_open(&c, 1, key, out, ad);
    if (err != FED_OK) goto fail;
    if ((len > 0 && EVP_EncryptUpdate(c, ct, &outl, msg, (int)len) != 1) ||
        EVP_EncryptFinal_ex(c, ct + outl, &last) != 1 || (size_t)outl + (size_t)last != len ||
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, TAG_LEN, ct + len) != 1)
        err = ossl_fail("AES-256-GCM seal");
fail:
    EVP_CIPHER_CTX_free(c);
    if (err != FED_OK) OPENSSL_cleanse(out, len + FED_SA_SEAL_OVERHEAD);
    return err;
}

fed_err fed_sa_open(uint8_t *out, size_t out_cap, const uint8_t key[FED_SA_KEY_LEN],
                    uint32_t sender, uint32_t recipient, uint64_t round, const uint8_t *sealed,
                    size_t sealed_len) {
    if (sealed_len < FED_SA_SEAL_OVERHEAD || sealed_len - FED_SA_SEAL_OVERHEAD > SEAL_MAX)
        return fed_errorf(FED_EAUTH, "sealed share of %zu bytes cannot be genuine", sealed_len);
    size_t len = sealed_len - FED_SA_SEAL_OVERHEAD;
    if (out_cap < len) return fed_errorf(FED_EINVAL, "out_cap: %zu bytes, needs %zu", out_cap, len);
    uint8_t ad[AD_LEN], tag[TAG_LEN], fin[TAG_LEN]; /* GCM's final step writes nothing */
    EVP_CIPHER_CTX *c = NULL;
    int outl = 0, last = 0;
    seal_ad(ad, sender, recipient, round);
    memcpy(tag, sealed + NONCE_LEN + len, TAG_LEN); /* the setter wants a mutable buffer */
    fed_err err = gcm_open(&c, 0, key, sealed, ad);
    if (err != FED_OK) return err;
    if ((len > 0 && EVP_DecryptUpdate(c, out, &outl, sealed + NONCE_LEN, (int)len) != 1) ||
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, TAG_LEN, tag) != 1) {
        err = ossl_fail("AES-256-GCM open");
    } else if (EVP_DecryptFinal_ex(c, fin, &last) != 1) {
        ERR_clear_error();
        err = fed_errorf(FED_EAUTH, "sealed share from %u to %u in round %llu does not verify",
                         (unsigned)sender, (unsigned)recipient, (unsigned long long)round);
    }
    EVP_CIPHER_CTX_free(c);
    if (err != FED_OK) fed_sa_wipe(out, len); /* never leave unverified plaintext */
    return err;
}
