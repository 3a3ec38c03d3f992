/* The administrator role's check (net/admin.h) with OpenSSL: the chain against the CA and
 * CRL files, then the extended key usages. Loads the files on every call: admin requests
 * are rare, and a CRL replaced on disk applies to the next one. */
#include "net/admin.h"
#include "net/tls.h"

#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* Whether leaf's extended key usage holds clientAuth, and the admin OID (the one test of
 * the role, fed__cert_is_admin in tls.c, which the channel uses too). */
static void key_usages(X509 *leaf, bool *client, bool *admin) {
    *admin = fed__cert_is_admin(leaf);
    *client = (X509_get_extended_key_usage(leaf) & XKU_SSL_CLIENT) != 0;
    ERR_clear_error();
}

/* The CA and (optional) CRL files as a store that checks revocation. */
static fed_err load_store(X509_STORE **out, const char *ca_file, const char *crl_file) {
    X509_STORE *st = X509_STORE_new();
    if (!st) return FED_ENOMEM;
    if (X509_STORE_load_file(st, ca_file) != 1) {
        X509_STORE_free(st);
        ERR_clear_error();
        return fed_errorf(FED_ETLS, "CA file %s: cannot be read as PEM certificates", ca_file);
    }
    if (crl_file) {
        X509_LOOKUP *lk = X509_STORE_add_lookup(st, X509_LOOKUP_file());
        if (!lk || X509_load_crl_file(lk, crl_file, X509_FILETYPE_PEM) < 1) {
            X509_STORE_free(st);
            ERR_clear_error();
            return fed_errorf(FED_ETLS, "CRL file %s: cannot be read as a PEM CRL", crl_file);
        }
        X509_STORE_set_flags(st, X509_V_FLAG_CRL_CHECK);
    }
    *out = st;
    return FED_OK;
}

fed_err fed_net_verify_admin_der(const uint8_t *const *der, const size_t *len, size_t n,
                                 const char *ca_file, const char *crl_file, char *cn,
                                 size_t cn_size) {
    if (cn_size) cn[0] = '\0';
    if (n == 0) return fed_errorf(FED_EAUTH, "no client certificate");
    X509 *leaf = NULL;
    STACK_OF(X509) *chain = sk_X509_new_null();
    X509_STORE *st = NULL;
    X509_STORE_CTX *ctx = NULL;
    fed_err err = chain ? FED_OK : FED_ENOMEM;
    for (size_t i = 0; !err && i < n; i++) {
        const unsigned char *p = der[i];
        X509 *x = len[i] <= 65536 ? d2i_X509(NULL, &p, (long)len[i]) : NULL;
        if (!x || p != der[i] + len[i]) {
            X509_free(x);
            err = fed_errorf(FED_EAUTH, "certificate %zu of the peer's chain is not DER", i);
        } else if (i == 0) {
            leaf = x;
        } else if (!sk_X509_push(chain, x)) {
            X509_free(x);
            err = FED_ENOMEM;
        }
    }
    if (!err) err = load_store(&st, ca_file, crl_file);
    if (!err && !(ctx = X509_STORE_CTX_new())) err = FED_ENOMEM;
    if (!err && X509_STORE_CTX_init(ctx, st, leaf, chain) != 1) err = FED_ENOMEM;
    if (!err) {
        X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT);
        int rc = X509_verify_cert(ctx), why = X509_STORE_CTX_get_error(ctx);
        if (rc != 1 && why == X509_V_ERR_INVALID_PURPOSE)
            err = fed_errorf(FED_EAUTH, "certificate refused: not a client certificate (no "
                                        "extended key usage clientAuth)");
        else if (rc != 1)
            err = fed_errorf(FED_EAUTH, "certificate refused: %s",
                             X509_verify_cert_error_string(why));
    }
    char name[256] = "";
    if (leaf)
        X509_NAME_get_text_by_NID(X509_get_subject_name(leaf), NID_commonName, name,
                                  (int)sizeof name);
    if (!err) {
        bool client, admin;
        key_usages(leaf, &client, &admin);
        if (!client)
            err = fed_errorf(FED_EAUTH, "CN %s: no extended key usage clientAuth", name);
        else if (!admin)
            err =
                fed_errorf(FED_EAUTH, "CN %s: not an admin certificate (no extended key usage %s)",
                           name, FED_ADMIN_EKU_OID);
    }
    if (!err && cn_size) snprintf(cn, cn_size, "%s", name);
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(st);
    sk_X509_pop_free(chain, X509_free);
    X509_free(leaf);
    ERR_clear_error();
    return err;
}
