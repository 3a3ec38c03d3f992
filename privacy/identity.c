/* TLS identities outside TLS (see identity.h) on OpenSSL 3's libcrypto: PEM loading,
 * EVP_DigestSign/EVP_DigestVerify, and X509_verify_cert against a private X509_STORE
 * that holds the CA certificates and CRLs. The only other file of this library that
 * includes OpenSSL headers is secagg_crypto.c. Nothing here opens sockets or keeps
 * state between calls beyond what fed_id_new loaded; private keys stay inside OpenSSL,
 * which wipes them when they are freed. */
#include "privacy/identity.h"

#include "core/alloc.h"
#include "core/endian.h"

#include <errno.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>

_Static_assert(FED_ID_BLOB_MAX <= 2 + 0xffff, "cert_len is a u16");

/* How a key signs. */
typedef enum kind { KIND_NONE, KIND_EC, KIND_RSA, KIND_EDDSA } kind;

struct fed_id {
    X509 *cert;                 /* this side's certificate */
    uint8_t *der;               /* its DER encoding, fed_malloc'd, der_len bytes */
    size_t der_len;             /* bytes of der; at most FED_ID_BLOB_MAX */
    EVP_PKEY *key;              /* this side's private key; NULL: verify only */
    size_t sig_max;             /* the key's largest signature in bytes; 0 without a key */
    X509_STORE *store;          /* the CA certificates (and CRLs) peers must chain to */
    char cn[FED_ID_CN_MAX + 1]; /* the subject CN of cert */
};

/* ---- Errors ------------------------------------------------------------------------- */

/* The reason of the first queued OpenSSL error, or fallback when there is none. */
static const char *ossl_reason(char *buf, size_t size, const char *fallback) {
    unsigned long e = ERR_peek_error();
    if (e == 0) return fallback;
    const char *r = ERR_reason_error_string(e);
    if (r != NULL) return r;
    ERR_error_string_n(e, buf, size);
    return buf;
}

/* Records "what: OpenSSL's reason" under code and empties OpenSSL's error queue. */
static fed_err ossl_fail(fed_err code, const char *what) {
    char buf[256];
    fed_err e = fed_errorf(code, "%s: %s", what, ossl_reason(buf, sizeof buf, "no OpenSSL reason"));
    ERR_clear_error();
    return e;
}

/* As ossl_fail for a file: "path: not a PEM <what> (OpenSSL's reason)". */
static fed_err file_fail(fed_err code, const char *path, const char *what) {
    char buf[256];
    fed_err e = fed_errorf(code, "%s: not a PEM %s (%s)", path, what,
                           ossl_reason(buf, sizeof buf, "no OpenSSL reason"));
    ERR_clear_error();
    return e;
}

/* True when the last queued error is the "no start line" that ends a PEM read loop at the
 * end of the file (as opposed to a damaged block). */
static bool pem_at_end(void) {
    unsigned long e = ERR_peek_last_error();
    return e == 0 || (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE);
}

/* ---- Certificates and keys ---------------------------------------------------------- */

static kind key_kind(const EVP_PKEY *pk) {
    if (EVP_PKEY_is_a(pk, "EC")) return KIND_EC;
    if (EVP_PKEY_is_a(pk, "RSA") || EVP_PKEY_is_a(pk, "RSA-PSS")) return KIND_RSA;
    if (EVP_PKEY_is_a(pk, "ED25519") || EVP_PKEY_is_a(pk, "ED448")) return KIND_EDDSA;
    return KIND_NONE;
}

/* The digest of kind's signatures; NULL for EdDSA, which hashes by itself. */
static const char *kind_md(kind k) {
    return k == KIND_EDDSA ? NULL : "SHA256";
}

/* RSA signs with PSS, MGF1 and salt both SHA-256 sized; other kinds need nothing. */
static bool kind_setup(kind k, EVP_PKEY_CTX *pctx) {
    if (k != KIND_RSA) return true;
    return EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) > 0 &&
           EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) > 0;
}

/* Copies the subject CN of cert into out (FED_ID_CN_MAX + 1 bytes); false, with out "",
 * when there is none, more than one, or it is not 1..FED_ID_CN_MAX printable ASCII
 * characters. */
static bool cert_cn(X509 *cert, char *out) {
    out[0] = '\0';
    X509_NAME *nm = X509_get_subject_name(cert);
    if (nm == NULL) return false;
    int idx = X509_NAME_get_index_by_NID(nm, NID_commonName, -1);
    if (idx < 0 || X509_NAME_get_index_by_NID(nm, NID_commonName, idx) >= 0) return false;
    ASN1_STRING *d = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(nm, idx));
    unsigned char *utf8 = NULL;
    int n = ASN1_STRING_to_UTF8(&utf8, d);
    bool ok = n >= 1 && n <= FED_ID_CN_MAX;
    for (int i = 0; ok && i < n; i++) ok = utf8[i] >= 0x20 && utf8[i] < 0x7f;
    if (ok) {
        memcpy(out, utf8, (size_t)n);
        out[n] = '\0';
    }
    OPENSSL_free(utf8);
    ERR_clear_error();
    return ok;
}

/* Opens path for PEM reading; FED_EIO naming it when it cannot be opened. */
static fed_err open_file(BIO **b, const char *path) {
    FILE *f = fopen(path, "r");
    if (f == NULL) return fed_errorf(FED_EIO, "%s: cannot open: %s", path, strerror(errno));
    *b = BIO_new_fp(f, BIO_CLOSE);
    if (*b == NULL) {
        fclose(f);
        return ossl_fail(FED_ENOMEM, path);
    }
    return FED_OK;
}

/* Refuses a passphrase prompt: an encrypted key simply fails to load. */
static int no_passphrase(char *buf, int size, int rwflag, void *u) {
    (void)buf, (void)size, (void)rwflag, (void)u;
    return -1;
}

static fed_err load_cert(fed_id *id, const char *path) {
    BIO *b = NULL;
    fed_err err = open_file(&b, path);
    if (err != FED_OK) return err;
    id->cert = PEM_read_bio_X509(b, NULL, no_passphrase, NULL);
    BIO_free(b);
    if (id->cert == NULL) return file_fail(FED_EIO, path, "certificate");
    unsigned char *der = NULL;
    int n = i2d_X509(id->cert, &der);
    if (n <= 0) return ossl_fail(FED_EINTERNAL, path);
    id->der_len = (size_t)n;
    id->der = fed_malloc(id->der_len);
    if (id->der != NULL) memcpy(id->der, der, id->der_len);
    OPENSSL_free(der);
    if (id->der == NULL) return FED_ENOMEM;
    if (id->der_len > FED_ID_BLOB_MAX - 3)
        return fed_errorf(FED_EINVAL,
                          "%s: the certificate has %zu bytes: no signed blob fits in "
                          "FED_ID_BLOB_MAX (%d)",
                          path, id->der_len, FED_ID_BLOB_MAX);
    if (!cert_cn(id->cert, id->cn))
        return fed_errorf(FED_EINVAL,
                          "%s: the certificate has no single CN of 1..%d printable "
                          "characters",
                          path, FED_ID_CN_MAX);
    return FED_OK;
}

static fed_err load_key(fed_id *id, const char *path, const char *cert_path) {
    BIO *b = NULL;
    fed_err err = open_file(&b, path);
    if (err != FED_OK) return err;
    id->key = PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL);
    BIO_free(b);
    if (id->key == NULL) return file_fail(FED_EIO, path, "private key, or an encrypted one");
    if (X509_check_private_key(id->cert, id->key) != 1) {
        ERR_clear_error();
        return fed_errorf(FED_EINVAL, "%s: the key does not match the certificate %s", path,
                          cert_path);
    }
    if (key_kind(id->key) == KIND_NONE)
        return fed_errorf(FED_EINVAL, "%s: %s keys cannot sign here (EC, RSA, Ed25519, Ed448)",
                          path, EVP_PKEY_get0_type_name(id->key));
    int size = EVP_PKEY_get_size(id->key);
    if (size <= 0) return ossl_fail(FED_EINTERNAL, path);
    id->sig_max = (size_t)size;
    if (2 + id->der_len + id->sig_max > FED_ID_BLOB_MAX)
        return fed_errorf(FED_EINVAL,
                          "%s: a certificate of %zu bytes and signatures of up to %zu "
                          "exceed FED_ID_BLOB_MAX (%d)",
                          path, id->der_len, id->sig_max, FED_ID_BLOB_MAX);
    return FED_OK;
}

/* Adds every PEM certificate (crl false) or CRL (crl true) of path to the store;
 * FED_EIO when there is none or a block is damaged. */
static fed_err load_store(X509_STORE *st, const char *path, bool crl) {
    BIO *b = NULL;
    fed_err err = open_file(&b, path);
    if (err != FED_OK) return err;
    const char *what = crl ? "CRL" : "certificate";
    int n = 0;
    for (;; n++) {
        int ok;
        if (crl) {
            X509_CRL *c = PEM_read_bio_X509_CRL(b, NULL, no_passphrase, NULL);
            if (c == NULL) break;
            ok = X509_STORE_add_crl(st, c);
            X509_CRL_free(c);
        } else {
            X509 *c = PEM_read_bio_X509(b, NULL, no_passphrase, NULL);
            if (c == NULL) break;
            ok = X509_STORE_add_cert(st, c);
            X509_free(c);
        }
        if (ok != 1) {
            BIO_free(b);
            return ossl_fail(FED_EINTERNAL, path);
        }
    }
    BIO_free(b);
    if (n > 0 && !pem_at_end()) {
        char buf[64];
        snprintf(buf, sizeof buf, "%s %d", what, n + 1);
        return file_fail(FED_EIO, path, buf);
    }
    ERR_clear_error(); /* the loop ends on "no start line" */
    if (n == 0) return fed_errorf(FED_EIO, "%s: no PEM %s in the file", path, what);
    return FED_OK;
}

fed_err fed_id_new(fed_id **out, const char *cert_file, const char *key_file, const char *ca_file,
                   const char *crl_file) {
    *out = NULL;
    if (cert_file == NULL || ca_file == NULL)
        return fed_errorf(FED_EINVAL, "identity: %s file not given",
                          cert_file == NULL ? "certificate" : "CA");
    ERR_clear_error();
    fed_id *id = fed_calloc(1, sizeof *id);
    if (id == NULL) return FED_ENOMEM;
    fed_err err = load_cert(id, cert_file);
    if (err == FED_OK && key_file != NULL) err = load_key(id, key_file, cert_file);
    if (err == FED_OK && (id->store = X509_STORE_new()) == NULL)
        err = ossl_fail(FED_ENOMEM, "X509_STORE_new");
    if (err == FED_OK) err = load_store(id->store, ca_file, false);
    if (err == FED_OK && crl_file != NULL) {
        err = load_store(id->store, crl_file, true);
        if (err == FED_OK && X509_STORE_set_flags(id->store, X509_V_FLAG_CRL_CHECK) != 1)
            err = ossl_fail(FED_EINTERNAL, "CRL check");
    }
    if (err != FED_OK) {
        fed_id_destroy(&id);
        ERR_clear_error();
        return err;
    }
    *out = id;
    return FED_OK;
}

void fed_id_destroy(fed_id **id) {
    if (id == NULL || *id == NULL) return;
    fed_id *p = *id;
    X509_free(p->cert);
    fed_free(p->der);
    EVP_PKEY_free(p->key);
    X509_STORE_free(p->store);
    fed_free(p);
    *id = NULL;
}

const char *fed_id_cn(const fed_id *id) {
    return id->cn;
}

size_t fed_id_blob_max(const fed_id *id) {
    return id->key != NULL ? 2 + id->der_len + id->sig_max : 0;
}

/* ---- Signing ------------------------------------------------------------------------ */

fed_err fed_id_sign(const fed_id *id, const uint8_t *data, size_t len, uint8_t *out, size_t cap,
                    size_t *out_len) {
    *out_len = 0;
    if (id->key == NULL)
        return fed_errorf(FED_EINVAL, "identity %s: no private key loaded (verify only)", id->cn);
    size_t need = fed_id_blob_max(id);
    if (cap < need)
        return fed_errorf(FED_ERANGE,
                          "cap: %zu bytes, a signed blob needs up to %zu (u16, "
                          "certificate %zu, signature up to %zu)",
                          cap, need, id->der_len, id->sig_max);
    kind k = key_kind(id->key);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL; /* owned by md */
    uint8_t *sig = out + 2 + id->der_len;
    size_t sig_len = id->sig_max;
    fed_err err = FED_OK;
    if (md == NULL ||
        EVP_DigestSignInit_ex(md, &pctx, kind_md(k), NULL, NULL, id->key, NULL) != 1 ||
        !kind_setup(k, pctx) ||
        EVP_DigestSign(md, sig, &sig_len, len > 0 ? data : (const uint8_t *)"", len) != 1) {
        err = ossl_fail(FED_EINTERNAL, "signing");
    } else if (sig_len == 0 || sig_len > id->sig_max) {
        err = fed_errorf(FED_EINTERNAL, "signing: a signature of %zu bytes", sig_len);
    } else {
        fed_store_le16(out, (uint16_t)id->der_len);
        memcpy(out + 2, id->der, id->der_len);
        *out_len = 2 + id->der_len + sig_len;
    }
    EVP_MD_CTX_free(md);
    return err;
}

/* ---- Verifying ---------------------------------------------------------------------- */

/* Parses blob strictly into its certificate and signature. */
static fed_err parse_blob(const uint8_t *blob, size_t blob_len, X509 **cert, const uint8_t **sig,
                          size_t *sig_len) {
    if (blob_len > FED_ID_BLOB_MAX)
        return fed_errorf(FED_EFORMAT, "signed blob: %zu bytes, more than FED_ID_BLOB_MAX (%d)",
                          blob_len, FED_ID_BLOB_MAX);
    if (blob_len < 2)
        return fed_errorf(FED_EFORMAT, "signed blob: truncated at %zu bytes, before cert_len",
                          blob_len);
    size_t cert_len = fed_load_le16(blob);
    if (cert_len == 0) return fed_errorf(FED_EFORMAT, "signed blob: cert_len is 0");
    if (cert_len > blob_len - 2)
        return fed_errorf(FED_EFORMAT, "signed blob: cert_len %zu beyond the %zu bytes after it",
                          cert_len, blob_len - 2);
    const unsigned char *p = blob + 2;
    *cert = d2i_X509(NULL, &p, (long)cert_len);
    if (*cert == NULL) {
        ERR_clear_error();
        return fed_errorf(FED_EFORMAT,
                          "signed blob: the certificate (cert_len %zu) is not X.509 "
                          "DER",
                          cert_len);
    }
    size_t used = (size_t)(p - (blob + 2));
    if (used != cert_len)
        return fed_errorf(FED_EFORMAT,
                          "signed blob: %zu bytes of trailing garbage inside the "
                          "certificate (cert_len %zu, the DER ends at %zu)",
                          cert_len - used, cert_len, used);
    /* d2i tolerates some BER in the outer structure; the re-encoding must be the input. */
    unsigned char *der = NULL;
    int n = i2d_X509(*cert, &der);
    bool same = n > 0 && (size_t)n == cert_len && memcmp(der, blob + 2, cert_len) == 0;
    OPENSSL_free(der);
    if (!same) {
        ERR_clear_error();
        return fed_errorf(FED_EFORMAT, "signed blob: the certificate is not in DER (it "
                                       "re-encodes differently)");
    }
    *sig = blob + 2 + cert_len;
    *sig_len = blob_len - 2 - cert_len;
    if (*sig_len == 0) return fed_errorf(FED_EFORMAT, "signed blob: empty signature");
    return FED_OK;
}

/* Checks cert against the store; FED_EAUTH with the verifier's reason. who is appended to
 * messages: " (CN \"site-a\")", or "" when the certificate has no CN worth showing. */
static fed_err check_chain(const fed_id *id, X509 *cert, bool want_client, const char *who) {
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    if (ctx == NULL) return ossl_fail(FED_ENOMEM, "X509_STORE_CTX_new");
    fed_err err = FED_OK;
    if (X509_STORE_CTX_init(ctx, id->store, cert, NULL) != 1 ||
        (want_client && X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT) != 1)) {
        err = ossl_fail(FED_EINTERNAL, "certificate check set-up");
    } else if (X509_verify_cert(ctx) != 1) {
        int v = X509_STORE_CTX_get_error(ctx);
        if (v == X509_V_OK) {
            err = ossl_fail(FED_EINTERNAL, "certificate check");
        } else {
            err = fed_errorf(FED_EAUTH, "certificate: %s%s", X509_verify_cert_error_string(v), who);
        }
    } else if ((X509_get_key_usage(cert) & KU_DIGITAL_SIGNATURE) == 0) {
        err = fed_errorf(FED_EAUTH, "certificate: its key usage does not allow digitalSignature%s",
                         who);
    }
    X509_STORE_CTX_free(ctx);
    ERR_clear_error(); /* CRL and issuer look-ups may queue errors even on success */
    return err;
}

/* Checks sig over data with cert's public key; FED_EAUTH when it does not verify. */
static fed_err check_signature(X509 *cert, const uint8_t *data, size_t len, const uint8_t *sig,
                               size_t sig_len, const char *who) {
    EVP_PKEY *pk = X509_get0_pubkey(cert);
    kind k = pk != NULL ? key_kind(pk) : KIND_NONE;
    if (k == KIND_NONE) {
        ERR_clear_error();
        return fed_errorf(FED_EAUTH, "certificate: its %s key cannot sign here%s",
                          pk != NULL ? EVP_PKEY_get0_type_name(pk) : "unreadable", who);
    }
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL; /* owned by md */
    fed_err err = FED_OK;
    if (md == NULL || EVP_DigestVerifyInit_ex(md, &pctx, kind_md(k), NULL, NULL, pk, NULL) != 1 ||
        !kind_setup(k, pctx)) {
        err = ossl_fail(FED_EINTERNAL, "signature check set-up");
    } else if (EVP_DigestVerify(md, sig, sig_len, len > 0 ? data : (const uint8_t *)"", len) != 1) {
        err = fed_errorf(FED_EAUTH, "signature does not verify%s", who);
    }
    EVP_MD_CTX_free(md);
    ERR_clear_error();
    return err;
}

fed_err fed_id_verify(const fed_id *id, const uint8_t *data, size_t len, const uint8_t *blob,
                      size_t blob_len, bool want_client, char *cn) {
    if (cn != NULL) cn[0] = '\0';
    X509 *cert = NULL;
    const uint8_t *sig = NULL;
    size_t sig_len = 0;
    char shown[FED_ID_CN_MAX + 1], who[FED_ID_CN_MAX + 16] = "";
    ERR_clear_error();
    fed_err err = parse_blob(blob, blob_len, &cert, &sig, &sig_len);
    if (err != FED_OK) goto fail;
    bool has_cn = cert_cn(cert, shown);
    if (has_cn) snprintf(who, sizeof who, " (CN \"%s\")", shown);
    if ((err = check_chain(id, cert, want_client, who)) != FED_OK) goto fail;
    if (!has_cn) {
        err = fed_errorf(FED_EAUTH, "certificate: no single CN of 1..%d printable characters",
                         FED_ID_CN_MAX);
        goto fail;
    }
    if ((err = check_signature(cert, data, len, sig, sig_len, who)) != FED_OK) goto fail;
    if (cn != NULL) memcpy(cn, shown, strlen(shown) + 1);
fail:
    X509_free(cert);
    ERR_clear_error();
    return err;
}
