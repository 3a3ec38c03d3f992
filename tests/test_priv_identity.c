/* Tests of TLS identities for signed key blocks (privacy/identity.h), with certificates
 * made by certs/fedtune-certs in a temporary folder: a site's signed secure-aggregation
 * key block verifies and names the site, and the blob is exactly u16 length, the
 * certificate's DER and a signature that the openssl command line accepts; every one-bit
 * change of the data, the signature, the certificate or its length is refused with the
 * code the header promises; certificates of another CA, of the wrong purpose, revoked or
 * expired are refused with the verifier's reason; every truncation fails cleanly; file
 * and key errors name the file; RSA-PSS and Ed25519 identities made with the openssl
 * command line work too; several threads use their own objects at once; nothing is left
 * in OpenSSL's error queue. */
#include "privacy/identity.h"
#include "tests/test.h"

#include "core/alloc_internal.h"
#include "privacy/secagg.h"
#include "tests/test_certdir.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef FED_CERTS_SCRIPT
#define FED_CERTS_SCRIPT "../certs/fedtune-certs" /* local builds only; CMake passes it */
#endif

/* Tests do not include OpenSSL headers (one file per backend header); this one function
 * of libcrypto, which fedpriv links, shows whether a call left errors queued. */
unsigned long ERR_peek_error(void);

/* ---- Certificates ------------------------------------------------------------------- */

/* A site certificate NAME of CA "ca" for a key made by `openssl genpkey ALG_ARGS`, with the
 * extensions fedtune-certs gives sites; in certdir/NAME.key and NAME.crt. */
static int other_key_site(const char *name, const char *alg_args) {
    const char *q = ">/dev/null 2>&1";
    int rc = sh("openssl genpkey %s -out %s/%s.key %s", alg_args, certdir, name, q);
    rc |= sh("openssl req -new -key %s/%s.key -subj /CN=%s -out %s/%s.csr %s", certdir, name, name,
             certdir, name, q);
    rc |= sh("openssl x509 -req -in %s/%s.csr -CA %s/ca/ca.crt -CAkey %s/ca/ca.key "
             "-CAcreateserial -days 30 -extfile %s/site.ext -out %s/%s.crt %s",
             certdir, name, certdir, certdir, certdir, certdir, name, q);
    return rc;
}

/* CA "ca" with sites site-a, site-b, an expired and a revoked site (and the CRL), the
 * coordinator "localhost", RSA and Ed25519 sites made with the openssl command line; a
 * second CA "ca2" with the site "intruder"; a file "junk.txt" that is not PEM. */
static int certs_make(void) {
    snprintf(certdir, sizeof certdir, "/tmp/fedid-test-XXXXXX");
    if (!mkdtemp(certdir)) return -1;
    const char *s = FED_CERTS_SCRIPT;
    const char *q = ">/dev/null 2>&1";
    int rc = sh("%s init-ca %s/ca %s", s, certdir, q);
    rc |= sh("%s coordinator %s/ca localhost --ip 127.0.0.1 %s", s, certdir, q);
    rc |= sh("%s site %s/ca site-a %s", s, certdir, q);
    rc |= sh("%s site %s/ca site-b %s", s, certdir, q);
    rc |= sh("%s site %s/ca expired --not-before 20200101000000Z --not-after 20210101000000Z %s", s,
             certdir, q);
    rc |= sh("%s site %s/ca revoked %s", s, certdir, q);
    rc |= sh("%s revoke %s/ca revoked %s", s, certdir, q);
    rc |= sh("%s init-ca %s/ca2 --name 'other CA' %s", s, certdir, q);
    rc |= sh("%s site %s/ca2 intruder %s", s, certdir, q);
    rc |= sh("printf '%%s\\n' 'basicConstraints=critical,CA:FALSE' "
             "'keyUsage=critical,digitalSignature' 'extendedKeyUsage=clientAuth' > %s/site.ext",
             certdir);
    rc |= other_key_site("rsa-site", "-algorithm RSA -pkeyopt rsa_keygen_bits:2048");
    rc |= other_key_site("ed-site", "-algorithm ED25519");
    rc |= sh("echo 'not a certificate' > %s/junk.txt", certdir);
    return rc;
}

static void certs_remove(void) {
    if (certdir[0] && sh("rm -rf '%s'", certdir) != 0) fprintf(stderr, "left %s\n", certdir);
}

/* site NAME of CA dir ("ca" or "ca2"): its certificate and key paths. */
static const char *site_crt(const char *ca, const char *name) {
    static char bufs[4][320];
    static int next;
    char *b = bufs[next++ % 4];
    snprintf(b, sizeof bufs[0], "%s/%s/sites/%s/%s.crt", certdir, ca, name, name);
    return b;
}

static const char *site_key(const char *ca, const char *name) {
    static char bufs[4][320];
    static int next;
    char *b = bufs[next++ % 4];
    snprintf(b, sizeof bufs[0], "%s/%s/sites/%s/%s.key", certdir, ca, name, name);
    return b;
}

/* The identity of site NAME of CA "ca" (ca2 for "intruder"), checking against CA "ca"
 * and its CRL; NULL on failure (counted). */
static fed_id *site_id(const char *name) {
    const char *ca = strcmp(name, "intruder") == 0 ? "ca2" : "ca";
    fed_id *id = NULL;
    CHECK_OK(fed_id_new(&id, site_crt(ca, name), site_key(ca, name), cpath("ca/ca.crt"),
                        cpath("ca/crl.pem")));
    return id;
}

/* A verifier with no key of its own (site-b's certificate), CA "ca", with the CRL or not. */
static fed_id *verifier(bool crl) {
    fed_id *id = NULL;
    CHECK_OK(fed_id_new(&id, site_crt("ca", "site-b"), NULL, cpath("ca/ca.crt"),
                        crl ? cpath("ca/crl.pem") : NULL));
    return id;
}

/* The whole of a small file into buf; its length, or 0 on failure. */
static size_t read_all(const char *path, uint8_t *buf, size_t cap) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t n = fread(buf, 1, cap, f);
    fclose(f);
    return n;
}

static int write_all(const char *path, const uint8_t *buf, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(buf, 1, n, f);
    return fclose(f) == 0 && w == n ? 0 : -1;
}

/* A real secure-aggregation key block: round 7, client 3. */
static void key_block(uint8_t block[FED_SA_SIGNED_LEN]) {
    uint8_t keys[FED_SA_KEYS_LEN];
    for (int i = 0; i < FED_SA_KEYS_LEN; i++) keys[i] = (uint8_t)(i * 7 + 1);
    fed_sa_signed_block(block, 7, 3, keys);
}

static uint8_t blob_a[FED_ID_BLOB_MAX]; /* site-a's signature of key_block */
static size_t blob_a_len;

/* ---- Round trip --------------------------------------------------------------------- */

TEST(site_signs_and_peer_verifies) {
    uint8_t block[FED_SA_SIGNED_LEN], der[2048];
    key_block(block);
    fed_id *a = site_id("site-a"), *v = verifier(true);
    if (!a || !v) goto done;
    CHECK_STR(fed_id_cn(a), "site-a");
    CHECK_STR(fed_id_cn(v), "site-b");
    CHECK_SIZE(fed_id_blob_max(v), 0);
    CHECK_OK(fed_id_sign(a, block, sizeof block, blob_a, sizeof blob_a, &blob_a_len));

    /* The layout: u16 length, exactly the certificate's DER, then the signature. */
    CHECK_INT(sh("openssl x509 -in %s -outform DER -out %s", site_crt("ca", "site-a"),
                 cpath("site-a.der")),
              0);
    size_t der_len = read_all(cpath("site-a.der"), der, sizeof der);
    CHECK(der_len > 300 && der_len < 600);
    CHECK_SIZE((size_t)blob_a[0] | (size_t)blob_a[1] << 8, der_len);
    CHECK_MEM(blob_a + 2, der, der_len);
    size_t sig_len = blob_a_len - 2 - der_len;
    CHECK(sig_len >= 8 && sig_len <= 72); /* DER ECDSA P-256 */
    CHECK_SIZE(fed_id_blob_max(a), 2 + der_len + 72);
    CHECK(blob_a_len <= FED_SA_SIG_MAX); /* fits the ADVERTISE message's signature field */
    fprintf(stderr,
            "  site-a blob: %zu bytes (u16 + certificate %zu + signature %zu), at most "
            "%zu\n",
            blob_a_len, der_len, sig_len, fed_id_blob_max(a));

    /* The openssl command line accepts the signature: ECDSA with SHA-256. */
    CHECK_INT(write_all(cpath("block.bin"), block, sizeof block), 0);
    CHECK_INT(write_all(cpath("block.sig"), blob_a + 2 + der_len, sig_len), 0);
    CHECK_INT(sh("openssl x509 -in %s -pubkey -noout > %s", site_crt("ca", "site-a"),
                 cpath("site-a.pub")),
              0);
    CHECK_INT(sh("openssl dgst -sha256 -verify %s -signature %s %s >/dev/null", cpath("site-a.pub"),
                 cpath("block.sig"), cpath("block.bin")),
              0);

    char cn[FED_ID_CN_MAX + 1] = "junk";
    CHECK_OK(fed_id_verify(v, block, sizeof block, blob_a, blob_a_len, true, cn));
    CHECK_STR(cn, "site-a");
    CHECK_OK(fed_id_verify(a, block, sizeof block, blob_a, blob_a_len, false, NULL));
    CHECK_OK(fed_id_verify(v, block, sizeof block, blob_a, blob_a_len, true, NULL));

    /* ECDSA is randomised: a second signature differs and verifies as well. */
    uint8_t again[FED_ID_BLOB_MAX];
    size_t again_len = 0;
    CHECK_OK(fed_id_sign(a, block, sizeof block, again, sizeof again, &again_len));
    CHECK(again_len != blob_a_len || memcmp(again, blob_a, again_len) != 0);
    CHECK_OK(fed_id_verify(v, block, sizeof block, again, again_len, true, cn));

    /* Empty data can be signed too. */
    CHECK_OK(fed_id_sign(a, NULL, 0, again, sizeof again, &again_len));
    CHECK_OK(fed_id_verify(v, NULL, 0, again, again_len, true, cn));
    CHECK_ERR(fed_id_verify(v, block, 1, again, again_len, true, cn), FED_EAUTH);
    CHECK_SIZE(ERR_peek_error(), 0);
done:
    fed_id_destroy(&a);
    fed_id_destroy(&v);
    CHECK(a == NULL);
    fed_id_destroy(&a); /* NULL-safe */
    fed_id_destroy(NULL);
}

TEST(sign_needs_a_key_and_room) {
    uint8_t block[FED_SA_SIGNED_LEN], out[FED_ID_BLOB_MAX];
    size_t n = 99;
    key_block(block);
    fed_id *a = site_id("site-a"), *v = verifier(false);
    if (!a || !v) goto done;
    CHECK_ERR(fed_id_sign(v, block, sizeof block, out, sizeof out, &n), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "no private key");
    CHECK_SIZE(n, 0);
    size_t need = fed_id_blob_max(a);
    char want[64];
    snprintf(want, sizeof want, "cap: %zu bytes, a signed blob needs up to %zu", need - 1, need);
    CHECK_ERR(fed_id_sign(a, block, sizeof block, out, need - 1, &n), FED_ERANGE);
    CHECK_CONTAINS(fed_errmsg(), want);
    CHECK_ERR(fed_id_sign(a, block, sizeof block, out, 0, &n), FED_ERANGE);
    CHECK_SIZE(n, 0);
    CHECK_OK(fed_id_sign(a, block, sizeof block, out, need, &n));
    CHECK(n > 0 && n <= need);
    CHECK_OK(fed_id_verify(v, block, sizeof block, out, n, true, NULL));
done:
    fed_id_destroy(&a);
    fed_id_destroy(&v);
}

/* ---- Tampering ---------------------------------------------------------------------- */

TEST(every_bit_flip_is_refused) {
    uint8_t block[FED_SA_SIGNED_LEN], blob[FED_ID_BLOB_MAX];
    key_block(block);
    fed_id *v = verifier(true);
    if (!v || blob_a_len == 0) goto done;
    size_t der_len = (size_t)blob_a[0] | (size_t)blob_a[1] << 8;
    char cn[FED_ID_CN_MAX + 1];

    /* The data: always "signature does not verify". */
    int data_auth = 0;
    for (size_t bit = 0; bit < 8 * sizeof block; bit++) {
        block[bit / 8] ^= (uint8_t)(1u << bit % 8);
        strcpy(cn, "junk");
        if (fed_id_verify(v, block, sizeof block, blob_a, blob_a_len, true, cn) == FED_EAUTH &&
            strstr(fed_errmsg(), "signature does not verify (CN \"site-a\")") && cn[0] == '\0')
            data_auth++;
        block[bit / 8] ^= (uint8_t)(1u << bit % 8);
    }
    CHECK_INT(data_auth, 8 * FED_SA_SIGNED_LEN);

    /* cert_len: too long runs past the DER (trailing garbage, or beyond the blob), too
     * short cuts it: always malformed. */
    int len_format = 0;
    for (size_t bit = 0; bit < 16; bit++) {
        memcpy(blob, blob_a, blob_a_len);
        blob[bit / 8] ^= (uint8_t)(1u << bit % 8);
        if (fed_id_verify(v, block, sizeof block, blob, blob_a_len, true, cn) == FED_EFORMAT)
            len_format++;
    }
    CHECK_INT(len_format, 16);

    /* The certificate: malformed, or refused by the verifier (the CA's signature). */
    int cert_auth = 0, cert_format = 0, cert_other = 0;
    for (size_t bit = 0; bit < 8 * der_len; bit++) {
        memcpy(blob, blob_a, blob_a_len);
        blob[2 + bit / 8] ^= (uint8_t)(1u << bit % 8);
        fed_err e = fed_id_verify(v, block, sizeof block, blob, blob_a_len, true, cn);
        if (e == FED_EAUTH && strstr(fed_errmsg(), "certificate: ") == fed_errmsg())
            cert_auth++;
        else if (e == FED_EFORMAT && strstr(fed_errmsg(), "signed blob: "))
            cert_format++;
        else {
            if (cert_other++ < 5)
                fprintf(stderr, "  certificate bit %zu: %s: %s\n", bit, fed_errname(e),
                        fed_errmsg());
        }
    }
    CHECK_INT(cert_other, 0);
    CHECK(cert_auth > 0 && cert_format > 0);
    fprintf(stderr, "  certificate bit flips: %d refused by the verifier, %d malformed\n",
            cert_auth, cert_format);

    /* The signature: always "signature does not verify" (OpenSSL re-encodes ECDSA
     * signatures and insists on the same DER). */
    int sig_auth = 0;
    size_t sig_bits = 8 * (blob_a_len - 2 - der_len);
    for (size_t bit = 0; bit < sig_bits; bit++) {
        memcpy(blob, blob_a, blob_a_len);
        blob[2 + der_len + bit / 8] ^= (uint8_t)(1u << bit % 8);
        if (fed_id_verify(v, block, sizeof block, blob, blob_a_len, true, cn) == FED_EAUTH &&
            strstr(fed_errmsg(), "signature does not verify"))
            sig_auth++;
    }
    CHECK_INT(sig_auth, (int)sig_bits);
    CHECK_SIZE(ERR_peek_error(), 0);

    /* The untouched blob still verifies. */
    CHECK_OK(fed_id_verify(v, block, sizeof block, blob_a, blob_a_len, true, cn));
done:
    fed_id_destroy(&v);
}

TEST(malformed_blobs_name_the_fault) {
    uint8_t block[FED_SA_SIGNED_LEN], blob[FED_ID_BLOB_MAX + 8];
    key_block(block);
    fed_id *v = verifier(true);
    if (!v || blob_a_len == 0) goto done;
    size_t der_len = (size_t)blob_a[0] | (size_t)blob_a[1] << 8;
    size_t sig_len = blob_a_len - 2 - der_len;
    char cn[FED_ID_CN_MAX + 1];

    CHECK_ERR(fed_id_verify(v, block, sizeof block, blob_a, 1, true, cn), FED_EFORMAT);
    CHECK_CONTAINS(fed_errmsg(), "truncated at 1 bytes");
    CHECK_ERR(fed_id_verify(v, block, sizeof block, blob_a, 0, true, cn), FED_EFORMAT);

    /* cert_len 0. */
    memcpy(blob, blob_a, blob_a_len);
    blob[0] = blob[1] = 0;
    CHECK_ERR(fed_id_verify(v, block, sizeof block, blob, blob_a_len, true, cn), FED_EFORMAT);
    CHECK_CONTAINS(fed_errmsg(), "cert_len is 0");

    /* cert_len beyond the blob. */
    blob[0] = 0xff, blob[1] = 0xff;
    CHECK_ERR(fed_id_verify(v, block, sizeof block, blob, blob_a_len, true, cn), FED_EFORMAT);
    char want[96];
    snprintf(want, sizeof want, "cert_len 65535 beyond the %zu bytes after it", blob_a_len - 2);
    CHECK_CONTAINS(fed_errmsg(), want);

    /* A byte of garbage inside the certificate (cert_len one more than the DER). */
    blob[0] = (uint8_t)((der_len + 1) & 0xff), blob[1] = (uint8_t)((der_len + 1) >> 8);
    memcpy(blob + 2, blob_a + 2, der_len);
    blob[2 + der_len] = 0;
    memcpy(blob + 3 + der_len, blob_a + 2 + der_len, sig_len);
    CHECK_ERR(fed_id_verify(v, block, sizeof block, blob, blob_a_len + 1, true, cn), FED_EFORMAT);
    CHECK_CONTAINS(fed_errmsg(), "1 bytes of trailing garbage inside the certificate");

    /* BER, not DER: the certificate's outer length in three bytes instead of two. The
     * CA's signature covers only the inner part, so only the re-encoding shows it. */
    CHECK_INT(blob_a[2], 0x30);
    CHECK_INT(blob_a[3], 0x82);
    blob[0] = (uint8_t)((der_len + 1) & 0xff), blob[1] = (uint8_t)((der_len + 1) >> 8);
    blob[2] = 0x30, blob[3] = 0x83, blob[4] = 0;
    memcpy(blob + 5, blob_a + 4, der_len - 2 + sig_len);
    CHECK_ERR(fed_id_verify(v, block, sizeof block, blob, blob_a_len + 1, true, cn), FED_EFORMAT);
    CHECK_CONTAINS(fed_errmsg(), "the certificate is not in DER");

    /* No signature. */
    CHECK_ERR(fed_id_verify(v, block, sizeof block, blob_a, 2 + der_len, true, cn), FED_EFORMAT);
    CHECK_CONTAINS(fed_errmsg(), "empty signature");

    /* Not a certificate at all. */
    memcpy(blob, blob_a, blob_a_len);
    memset(blob + 2, 0x41, der_len);
    CHECK_ERR(fed_id_verify(v, block, sizeof block, blob, blob_a_len, true, cn), FED_EFORMAT);
    CHECK_CONTAINS(fed_errmsg(), "is not X.509 DER");

    /* A byte after the signature: DER ECDSA signatures have no room for it. */
    memcpy(blob, blob_a, blob_a_len);
    blob[blob_a_len] = 0;
    CHECK_ERR(fed_id_verify(v, block, sizeof block, blob, blob_a_len + 1, true, cn), FED_EAUTH);
    CHECK_CONTAINS(fed_errmsg(), "signature does not verify");

    /* Longer than any blob may be. */
    memset(blob, 0, sizeof blob);
    memcpy(blob, blob_a, blob_a_len);
    CHECK_ERR(fed_id_verify(v, block, sizeof block, blob, FED_ID_BLOB_MAX + 1, true, cn),
              FED_EFORMAT);
    CHECK_CONTAINS(fed_errmsg(), "more than FED_ID_BLOB_MAX");
    CHECK_STR(cn, "");
    CHECK_SIZE(ERR_peek_error(), 0);
done:
    fed_id_destroy(&v);
}

TEST(every_truncation_fails_cleanly) {
    uint8_t block[FED_SA_SIGNED_LEN];
    key_block(block);
    fed_id *v = verifier(true);
    if (!v || blob_a_len == 0) goto done;
    size_t der_len = (size_t)blob_a[0] | (size_t)blob_a[1] << 8;
    int refused = 0, format = 0;
    for (size_t n = 0; n < blob_a_len; n++) {
        /* An exact-size copy, so that a read past the end shows under AddressSanitizer. */
        uint8_t *cut = malloc(n > 0 ? n : 1);
        if (!cut) break;
        memcpy(cut, blob_a, n);
        fed_err e = fed_id_verify(v, block, sizeof block, cut, n, true, NULL);
        free(cut);
        if (e != FED_OK) refused++;
        if (e == FED_EFORMAT) format++;
    }
    CHECK_INT(refused, (int)blob_a_len);
    /* Up to the end of the certificate the blob is malformed; then the signature is cut. */
    CHECK_INT(format, (int)(2 + der_len + 1));
    CHECK_SIZE(ERR_peek_error(), 0);
done:
    fed_id_destroy(&v);
}

/* ---- Certificates the verifier refuses ---------------------------------------------- */

/* signer's blob over the key block, checked by v: the code, the message in msg. */
static fed_err sign_and_check(fed_id *signer, fed_id *v, bool want_client, char *cn,
                              char msg[512]) {
    uint8_t block[FED_SA_SIGNED_LEN], blob[FED_ID_BLOB_MAX];
    size_t n = 0;
    key_block(block);
    msg[0] = '\0';
    if (!signer || !v) return FED_EINTERNAL;
    fed_err e = fed_id_sign(signer, block, sizeof block, blob, sizeof blob, &n);
    if (e == FED_OK) e = fed_id_verify(v, block, sizeof block, blob, n, want_client, cn);
    snprintf(msg, 512, "%s", fed_errmsg());
    return e;
}

TEST(another_ca_is_refused) {
    char cn[FED_ID_CN_MAX + 1], msg[512];
    fed_id *x = site_id("intruder"), *v = verifier(true);
    CHECK_ERR(sign_and_check(x, v, true, cn, msg), FED_EAUTH);
    CHECK_STR(msg, "certificate: unable to get local issuer certificate (CN \"intruder\")");
    CHECK_STR(cn, "");
    /* The intruder's own CA accepts it: the refusal is about the CA, not the blob. */
    fed_id *v2 = NULL;
    CHECK_OK(fed_id_new(&v2, site_crt("ca", "site-b"), NULL, cpath("ca2/ca.crt"), NULL));
    CHECK_OK(sign_and_check(x, v2, true, cn, msg));
    CHECK_STR(cn, "intruder");
    /* A bundle of both CAs (as during a CA rotation) accepts both. */
    fed_id *both = NULL, *a = site_id("site-a");
    CHECK_INT(sh("cat %s %s > %s", cpath("ca/ca.crt"), cpath("ca2/ca.crt"), cpath("both.crt")), 0);
    CHECK_OK(fed_id_new(&both, site_crt("ca", "site-b"), NULL, cpath("both.crt"), NULL));
    CHECK_OK(sign_and_check(x, both, true, cn, msg));
    CHECK_STR(cn, "intruder");
    CHECK_OK(sign_and_check(a, both, true, cn, msg));
    CHECK_STR(cn, "site-a");
    CHECK_SIZE(ERR_peek_error(), 0);
    fed_id_destroy(&x);
    fed_id_destroy(&v);
    fed_id_destroy(&v2);
    fed_id_destroy(&both);
    fed_id_destroy(&a);
}

TEST(coordinator_certificate_is_not_a_client) {
    char cn[FED_ID_CN_MAX + 1], msg[512];
    fed_id *c = NULL, *v = verifier(true);
    CHECK_OK(fed_id_new(&c, cpath("ca/coordinator/localhost.crt"),
                        cpath("ca/coordinator/localhost.key"), cpath("ca/ca.crt"), NULL));
    if (c) CHECK_STR(fed_id_cn(c), "localhost");
    CHECK_ERR(sign_and_check(c, v, true, cn, msg), FED_EAUTH);
    CHECK_STR(msg, "certificate: unsuitable certificate purpose (CN \"localhost\")");
    CHECK_STR(cn, "");
    /* Without want_client the chain is all that counts. */
    CHECK_OK(sign_and_check(c, v, false, cn, msg));
    CHECK_STR(cn, "localhost");
    CHECK_SIZE(ERR_peek_error(), 0);
    fed_id_destroy(&c);
    fed_id_destroy(&v);
}

TEST(revoked_and_expired_sites_are_refused) {
    char cn[FED_ID_CN_MAX + 1], msg[512];
    fed_id *r = site_id("revoked"), *e = site_id("expired");
    fed_id *v = verifier(true), *v_nocrl = verifier(false);
    CHECK_ERR(sign_and_check(r, v, true, cn, msg), FED_EAUTH);
    CHECK_STR(msg, "certificate: certificate revoked (CN \"revoked\")");
    /* Only the CRL knows: without it the certificate is fine. */
    CHECK_OK(sign_and_check(r, v_nocrl, true, cn, msg));
    CHECK_STR(cn, "revoked");
    CHECK_ERR(sign_and_check(e, v, true, cn, msg), FED_EAUTH);
    CHECK_STR(msg, "certificate: certificate has expired (CN \"expired\")");
    CHECK_ERR(sign_and_check(e, v_nocrl, true, cn, msg), FED_EAUTH);
    CHECK_SIZE(ERR_peek_error(), 0);
    fed_id_destroy(&r);
    fed_id_destroy(&e);
    fed_id_destroy(&v);
    fed_id_destroy(&v_nocrl);
}

/* A CRL issued by another CA than the certificate's leaves the verifier without the CRL
 * it needs: everyone is refused (fail closed). */
TEST(a_crl_of_another_ca_fails_closed) {
    char cn[FED_ID_CN_MAX + 1], msg[512];
    fed_id *a = site_id("site-a"), *v = NULL;
    CHECK_OK(
        fed_id_new(&v, site_crt("ca", "site-b"), NULL, cpath("ca/ca.crt"), cpath("ca2/crl.pem")));
    CHECK_ERR(sign_and_check(a, v, true, cn, msg), FED_EAUTH);
    CHECK_STR(msg, "certificate: unable to get certificate CRL (CN \"site-a\")");
    fed_id_destroy(&a);
    fed_id_destroy(&v);
}

/* ---- Loading ------------------------------------------------------------------------ */

TEST(file_errors_name_the_file) {
    fed_id *id = NULL;
    const char *crt = site_crt("ca", "site-a"), *key = site_key("ca", "site-a");
    const char *ca = cpath("ca/ca.crt"), *crl = cpath("ca/crl.pem");
    const char *missing = cpath("no-such-file.pem"), *junk = cpath("junk.txt");
    const char *args[4] = {crt, key, ca, crl};
    for (int which = 0; which < 4; which++) {
        for (int kind = 0; kind < 2; kind++) {
            const char *a[4] = {args[0], args[1], args[2], args[3]};
            a[which] = kind == 0 ? missing : junk;
            CHECK_ERR(fed_id_new(&id, a[0], a[1], a[2], a[3]), FED_EIO);
            CHECK_CONTAINS(fed_errmsg(), a[which]);
            CHECK(id == NULL);
        }
    }
    CHECK_ERR(fed_id_new(&id, missing, key, ca, crl), FED_EIO);
    CHECK_CONTAINS(fed_errmsg(), "no-such-file.pem: cannot open: No such file or directory");
    CHECK_ERR(fed_id_new(&id, crt, key, junk, crl), FED_EIO);
    CHECK_CONTAINS(fed_errmsg(), "junk.txt: no PEM certificate in the file");
    CHECK_ERR(fed_id_new(&id, junk, key, ca, crl), FED_EIO);
    CHECK_CONTAINS(fed_errmsg(), "junk.txt: not a PEM certificate");
    /* A directory opens but does not read. */
    CHECK_ERR(fed_id_new(&id, crt, key, cpath("ca"), crl), FED_EIO);
    CHECK_CONTAINS(fed_errmsg(), cpath("ca"));
    /* The certificate and key swapped: neither is what the other file should hold. */
    CHECK_ERR(fed_id_new(&id, key, crt, ca, crl), FED_EIO);
    CHECK_CONTAINS(fed_errmsg(), key);
    /* A CRL file given as CA bundle holds no certificate; a CA file as CRL no CRL. */
    CHECK_ERR(fed_id_new(&id, crt, key, crl, NULL), FED_EIO);
    CHECK_CONTAINS(fed_errmsg(), "no PEM certificate");
    CHECK_ERR(fed_id_new(&id, crt, key, ca, ca), FED_EIO);
    CHECK_CONTAINS(fed_errmsg(), "no PEM CRL");
    /* A damaged second certificate in the CA bundle. */
    CHECK_INT(sh("cp %s %s && printf '%%s\\n' '-----BEGIN CERTIFICATE-----' 'AAA*' "
                 "'-----END CERTIFICATE-----' >> %s",
                 ca, cpath("damaged.crt"), cpath("damaged.crt")),
              0);
    CHECK_ERR(fed_id_new(&id, crt, key, cpath("damaged.crt"), NULL), FED_EIO);
    CHECK_CONTAINS(fed_errmsg(), "damaged.crt: not a PEM certificate 2");
    /* An encrypted key fails to load rather than prompting. */
    CHECK_INT(
        sh("openssl pkey -in %s -aes256 -passout pass:secret -out %s", key, cpath("encrypted.key")),
        0);
    CHECK_ERR(fed_id_new(&id, crt, cpath("encrypted.key"), ca, crl), FED_EIO);
    CHECK_CONTAINS(fed_errmsg(), "encrypted.key: not a PEM private key");
    CHECK_ERR(fed_id_new(&id, NULL, key, ca, crl), FED_EINVAL);
    CHECK_ERR(fed_id_new(&id, crt, key, NULL, crl), FED_EINVAL);
    CHECK(id == NULL);
    CHECK_SIZE(ERR_peek_error(), 0);
}

TEST(key_of_another_site_is_refused) {
    fed_id *id = NULL;
    const char *crt = site_crt("ca", "site-a"), *key = site_key("ca", "site-b");
    CHECK_ERR(fed_id_new(&id, crt, key, cpath("ca/ca.crt"), NULL), FED_EINVAL);
    char want[700];
    snprintf(want, sizeof want, "%s: the key does not match the certificate %s", key, crt);
    CHECK_STR(fed_errmsg(), want);
    CHECK(id == NULL);
    /* Also across key types: an Ed25519 key with an EC certificate. */
    CHECK_ERR(fed_id_new(&id, crt, cpath("ed-site.key"), cpath("ca/ca.crt"), NULL), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "does not match");
    CHECK_SIZE(ERR_peek_error(), 0);
}

TEST(new_fails_cleanly_without_memory) {
    const char *crt = site_crt("ca", "site-a"), *key = site_key("ca", "site-a");
    FOR_EACH_ALLOC_FAILURE(f) {
        fed_id *id = NULL;
        ALLOC_TRY(f, fed_id_new(&id, crt, key, cpath("ca/ca.crt"), cpath("ca/crl.pem")));
        CHECK(f.failed ? id == NULL : id != NULL);
        fed_id_destroy(&id);
    }
    CHECK_SIZE(ERR_peek_error(), 0);
}

/* ---- Other key types ---------------------------------------------------------------- */

/* name's identity (made with the openssl command line) signs; the verifier accepts it and
 * so does `openssl CMD OPT[0] PUBKEY OPT[1] SIG OPT[2] DATA`. */
static void other_key_type(const char *name, const char *cmd, const char *const opt[3],
                           size_t sig_len) {
    fed_id *s = NULL, *v = verifier(true);
    char crt[320], key[320], cn[FED_ID_CN_MAX + 1], msg[512];
    snprintf(crt, sizeof crt, "%s/%s.crt", certdir, name);
    snprintf(key, sizeof key, "%s/%s.key", certdir, name);
    CHECK_OK(fed_id_new(&s, crt, key, cpath("ca/ca.crt"), cpath("ca/crl.pem")));
    if (!s || !v) goto done;
    CHECK_OK(sign_and_check(s, v, true, cn, msg));
    CHECK_STR(cn, name);

    uint8_t block[FED_SA_SIGNED_LEN], blob[FED_ID_BLOB_MAX];
    size_t n = 0;
    key_block(block);
    CHECK_OK(fed_id_sign(s, block, sizeof block, blob, sizeof blob, &n));
    size_t der_len = (size_t)blob[0] | (size_t)blob[1] << 8;
    CHECK_SIZE(n - 2 - der_len, sig_len); /* fixed-length signatures */
    CHECK_SIZE(fed_id_blob_max(s), n);
    fprintf(stderr, "  %s blob: %zu bytes (certificate %zu, signature %zu)\n", name, n, der_len,
            n - 2 - der_len);
    CHECK_INT(write_all(cpath("other.bin"), block, sizeof block), 0);
    CHECK_INT(write_all(cpath("other.sig"), blob + 2 + der_len, n - 2 - der_len), 0);
    CHECK_INT(sh("openssl x509 -in %s -pubkey -noout > %s", crt, cpath("other.pub")), 0);
    CHECK_INT(sh("openssl %s %s %s %s %s %s %s >/dev/null", cmd, opt[0], cpath("other.pub"), opt[1],
                 cpath("other.sig"), opt[2], cpath("other.bin")),
              0);

    /* A flipped bit of the signature or data is refused. */
    blob[n - 1] ^= 1;
    CHECK_ERR(fed_id_verify(v, block, sizeof block, blob, n, true, cn), FED_EAUTH);
    CHECK_CONTAINS(fed_errmsg(), "signature does not verify");
    blob[n - 1] ^= 1;
    block[0] ^= 0x80;
    CHECK_ERR(fed_id_verify(v, block, sizeof block, blob, n, true, cn), FED_EAUTH);
    block[0] ^= 0x80;
    CHECK_OK(fed_id_verify(v, block, sizeof block, blob, n, true, cn));
    CHECK_SIZE(ERR_peek_error(), 0);
done:
    fed_id_destroy(&s);
    fed_id_destroy(&v);
}

TEST(rsa_signs_with_pss) {
    static const char *const opt[3] = {"-verify", "-signature", ""};
    other_key_type("rsa-site",
                   "dgst -sha256 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:32", opt,
                   256);
}

TEST(ed25519_signs_pure) {
    static const char *const opt[3] = {"-inkey", "-sigfile", "-in"};
    other_key_type("ed-site", "pkeyutl -verify -rawin -pubin", opt, 64);
}

/* ---- Threads ------------------------------------------------------------------------ */

#define THREADS 4
#define ROUNDS  40

/* One thread's work; the paths are made before the threads start (cpath and site_crt
 * share static buffers). */
typedef struct job {
    const char *name; /* the site this thread signs as */
    char crt[320];    /* its certificate */
    char key[320];    /* its key */
    char ca[320];     /* the CA file */
    char crl[320];    /* the CRL */
    char v_crt[320];  /* site-b's certificate, for the verifier */
    int ok;           /* sign-verify rounds that gave the right CN */
} job;

static void *worker(void *arg) {
    job *j = arg;
    fed_id *s = NULL, *v = NULL;
    if (fed_id_new(&s, j->crt, j->key, j->ca, j->crl) != FED_OK ||
        fed_id_new(&v, j->v_crt, NULL, j->ca, j->crl) != FED_OK)
        goto done;
    for (int r = 0; r < ROUNDS; r++) {
        uint8_t block[FED_SA_SIGNED_LEN], keys[FED_SA_KEYS_LEN], blob[FED_ID_BLOB_MAX];
        char cn[FED_ID_CN_MAX + 1];
        size_t n = 0;
        memset(keys, r, sizeof keys);
        fed_sa_signed_block(block, (uint64_t)r, 1, keys);
        if (fed_id_sign(s, block, sizeof block, blob, sizeof blob, &n) == FED_OK &&
            fed_id_verify(v, block, sizeof block, blob, n, true, cn) == FED_OK &&
            strcmp(cn, j->name) == 0)
            j->ok++;
    }
done:
    fed_id_destroy(&s);
    fed_id_destroy(&v);
    return NULL;
}

TEST(threads_use_their_own_objects) {
    pthread_t t[THREADS];
    job jobs[THREADS];
    int started = 0;
    for (int i = 0; i < THREADS; i++) {
        job *j = &jobs[i];
        memset(j, 0, sizeof *j);
        j->name = i % 2 ? "site-b" : "site-a";
        snprintf(j->crt, sizeof j->crt, "%s", site_crt("ca", j->name));
        snprintf(j->key, sizeof j->key, "%s", site_key("ca", j->name));
        snprintf(j->ca, sizeof j->ca, "%s", cpath("ca/ca.crt"));
        snprintf(j->crl, sizeof j->crl, "%s", cpath("ca/crl.pem"));
        snprintf(j->v_crt, sizeof j->v_crt, "%s", site_crt("ca", "site-b"));
        if (pthread_create(&t[i], NULL, worker, &jobs[i]) == 0)
            started++;
        else
            break;
    }
    CHECK_INT(started, THREADS);
    for (int i = 0; i < started; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < started; i++) CHECK_INT(jobs[i].ok, ROUNDS);
}

int main(void) {
    if (certs_make() != 0) {
        fprintf(stderr, "cannot make certificates\n");
        certs_remove();
        return 1;
    }
    RUN(site_signs_and_peer_verifies);
    RUN(sign_needs_a_key_and_room);
    RUN(every_bit_flip_is_refused);
    RUN(malformed_blobs_name_the_fault);
    RUN(every_truncation_fails_cleanly);
    RUN(another_ca_is_refused);
    RUN(coordinator_certificate_is_not_a_client);
    RUN(revoked_and_expired_sites_are_refused);
    RUN(a_crl_of_another_ca_fails_closed);
    RUN(file_errors_name_the_file);
    RUN(key_of_another_site_is_refused);
    RUN(new_fails_cleanly_without_memory);
    RUN(rsa_signs_with_pss);
    RUN(ed25519_signs_pure);
    RUN(threads_use_their_own_objects);
    certs_remove();
    return test_report();
}
