/* TLS 1.3 sessions over memory, plaintext sessions for inproc:// simulation, SHA-256 and
 * random bytes (see tls.h). The only file of the channel that includes OpenSSL headers
 * (privacy/secagg_crypto.c is the other one in the project, for secure aggregation).
 *
 * Policy, in one place: TLS 1.3 only; AES-128-GCM preferred (fastest here, and 128-bit
 * security is ample); certificates required on both sides and verified against the
 * configured CA file only; purpose (extended key usage) sslclient on the coordinator and
 * sslserver on clients; the coordinator's name or IP address checked by clients; CRL
 * checking of the peer's certificate when a CRL file is configured; no session tickets,
 * no session cache, no renegotiation. Before a context is made, fed_net_check_tls reads
 * the files itself and refuses, with words, what would make every handshake fail later:
 * a missing or unreadable file, a folder, a file of another kind, an expired or
 * not-yet-valid certificate or CA, a certificate made for the other side, a key that does
 * not match, a CRL that expired or that another CA signed. A fatal alert from the peer is
 * noted as it arrives (the info callback), so a refusal reads as the peer's verdict in
 * words ("revoked") and is marked as one retrying cannot change. The single custom BIO both reads
 * the frame being processed (without copying it first) and writes to the owner's sink; when the
 * frame is used up a read asks to be retried, which OpenSSL reports as "want read".
 *
 * Plaintext sessions (the fed__tls_ctx_new_plain context) keep the same interface so
 * nothing above this file changes: the handshake is the identity claim and its answer
 * (wire form in channel.h), both parsed strictly, each required to be the whole of its
 * frame; afterwards read and write pass bytes through. Nothing is authenticated: the
 * channel refuses plaintext on anything but inproc:// endpoints. */
#include "net/net_internal.h"
#include "net/tls.h"

#include "core/alloc.h"

#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* The plaintext handshake: "FEDP", version 1, name length, name (channel.h). */
#define PLAIN_HDR     6
#define PLAIN_VERSION 1
static const uint8_t plain_magic[4] = {'F', 'E', 'D', 'P'};

struct fed__tls_ctx {
    SSL_CTX *ctx;                      /* shared by every session of one side; NULL: plain */
    STACK_OF(X509_CRL) * crls;         /* the CRLs in force (NULL: none), for revoked() */
    bool server;                       /* coordinator side */
    bool plain;                        /* plaintext sessions (inproc:// simulation) */
    char identity[FED_NET_CN_MAX + 1]; /* plaintext client: the name it claims */
    size_t identity_len;               /* its length */
};

/* Where a plaintext session's handshake stands. */
enum { PLAIN_START = 0, PLAIN_CLAIMED, PLAIN_DONE };

struct fed__tls {
    const fed__tls_ctx *ctx;           /* borrowed; outlives its sessions */
    SSL *ssl;                          /* the session; NULL in plaintext */
    fed__tls_sink sink;                /* where records go */
    void *user;                        /* sink's argument */
    const uint8_t *in;                 /* unread part of the current input */
    size_t in_len;                     /* its length */
    char peer_cn[FED_NET_CN_MAX + 1];  /* verified CN, after the handshake */
    bool admin;                        /* the verified peer certificate is an admin's */
    char shown_cn[FED_NET_CN_MAX + 1]; /* CN of the presented leaf, verified or not */
    char coord[256];                   /* client: the coordinator's name (or IP address) */
    int plain_step;                    /* plaintext: PLAIN_START, _CLAIMED (client), _DONE */
    bool started;                      /* TLS: the handshake has seen input */
    bool alert;                        /* the peer sent a fatal alert ... */
    uint8_t alert_desc;                /* ... with this description (RFC 8446 6.2) */
    bool refused;                      /* failed for a reason a retry cannot change */
};

/* Testing hook: fed__net_skip_checks (net_internal.h). */
static bool skip_checks;

struct fed__sha256 {
    EVP_MD_CTX *md; /* running digest */
};

/* ------------------------------------------------------------------------------------ */
/* The BIO                                                                              */

static BIO_METHOD *bio_method;
static pthread_once_t bio_once = PTHREAD_ONCE_INIT;

static int bio_write(BIO *b, const char *data, int len) {
    fed__tls *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (len <= 0) return 0;
    if (t->sink(t->user, (const uint8_t *)data, (size_t)len) != 0) return -1;
    return len;
}

static int bio_read(BIO *b, char *out, int len) {
    fed__tls *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (len <= 0) return 0;
    if (t->in_len == 0) {
        BIO_set_retry_read(b);
        return -1;
    }
    size_t n = t->in_len < (size_t)len ? t->in_len : (size_t)len;
    memcpy(out, t->in, n);
    t->in += n;
    t->in_len -= n;
    return (int)n;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr) {
    (void)num;
    (void)ptr;
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1;
    case BIO_CTRL_PENDING: {
        fed__tls *t = BIO_get_data(b);
        return t ? (long)t->in_len : 0;
    }
    default:
        return 0;
    }
}

static int bio_create(BIO *b) {
    BIO_set_init(b, 1);
    return 1;
}

static int bio_destroy(BIO *b) {
    BIO_set_data(b, NULL);
    return 1;
}

static void bio_method_init(void) {
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "fednet frame");
    if (!m) return;
    if (!BIO_meth_set_write(m, bio_write) || !BIO_meth_set_read(m, bio_read) ||
        !BIO_meth_set_ctrl(m, bio_ctrl) || !BIO_meth_set_create(m, bio_create) ||
        !BIO_meth_set_destroy(m, bio_destroy)) {
        BIO_meth_free(m);
        return;
    }
    bio_method = m;
}

/* ------------------------------------------------------------------------------------ */
/* Errors                                                                               */

/* The reason of the first queued OpenSSL error ("tlsv1 alert unknown ca"). */
static const char *ossl_reason(char *buf, size_t size) {
    unsigned long e = ERR_get_error();
    if (e == 0) return "unknown TLS error";
    const char *r = ERR_reason_error_string(e);
    if (r) return r;
    ERR_error_string_n(e, buf, size);
    return buf;
}

static fed_err ossl_fail(fed_err code, const char *what) {
    char buf[256];
    fed_err e = fed_errorf(code, "%s: %s", what, ossl_reason(buf, sizeof buf));
    ERR_clear_error();
    return e;
}

/* A fatal alert the peer sent, in words ("revoked"); *cert: it is about our certificate;
 * *permanent: the same configuration will meet the same refusal, so retrying is useless.
 * Everything else (decode errors, internal errors, ...) may be a transient accident. */
static const char *alert_words(int desc, bool *cert, bool *permanent) {
    *cert = true;
    *permanent = true;
    switch (desc) {
    case 42:
        return "bad certificate (not valid yet, or malformed)";
    case 43:
        return "unsupported certificate (not made for this use: extended key usage)";
    case 44:
        return "revoked";
    case 45:
        return "expired";
    case 46:
        return "certificate unknown";
    case 48:
        return "unknown CA (not issued by the CA it trusts)";
    case 49:
        return "access denied";
    case 116:
        return "certificate required (none was sent)";
    }
    *cert = false;
    switch (desc) {
    case 40:
        return "handshake failure (no cipher, group or signature algorithm in common)";
    case 70:
        return "protocol version (TLS 1.3 is not spoken there)";
    case 71:
        return "insufficient security";
    }
    *permanent = false;
    return SSL_alert_desc_string_long((2 << 8) | desc);
}

/* Notes the first fatal alert the peer sends, so a failure can say what it meant. */
static void info_cb(const SSL *ssl, int where, int ret) {
    /* SSL_CB_READ_ALERT and SSL_CB_WRITE_ALERT share the SSL_CB_ALERT bit: test both. */
    if (!(where & SSL_CB_ALERT) || !(where & SSL_CB_READ)) return;
    int desc = ret & 0xff;
    if (desc == 0 || desc == 90) return; /* close_notify, user_canceled: not refusals */
    fed__tls *t = SSL_get_app_data(ssl);
    if (t && !t->alert) {
        t->alert = true;
        t->alert_desc = (uint8_t)desc;
    }
}

/* The failure of a handshake or read: a refused certificate, the peer's alert, or a
 * protocol error, as one line; refusals also set t->refused. */
static fed_err session_fail(fed__tls *t) {
    bool server = t->ctx->server;
    long v = SSL_get_verify_result(t->ssl);
    if (v != X509_V_OK) {
        ERR_clear_error();
        t->refused = true;
        if (server)
            return fed_errorf(FED_EAUTH, "certificate refused: %s",
                              X509_verify_cert_error_string(v));
        bool name = v == X509_V_ERR_HOSTNAME_MISMATCH || v == X509_V_ERR_IP_ADDRESS_MISMATCH;
        return fed_errorf(FED_EAUTH, "the coordinator's certificate%s%s is refused: %s%s%s%s",
                          t->shown_cn[0] ? " with CN " : "", t->shown_cn,
                          X509_verify_cert_error_string(v), name ? " (it is not issued for " : "",
                          name ? t->coord : "", name ? ")" : "");
    }
    if (t->alert) {
        ERR_clear_error();
        bool cert, permanent;
        const char *words = alert_words(t->alert_desc, &cert, &permanent);
        t->refused = permanent;
        if (cert)
            return fed_errorf(FED_EAUTH, "%s: %s (TLS alert %d)",
                              server ? "the peer refused the coordinator's certificate"
                                     : "the coordinator refused this site's certificate",
                              words, t->alert_desc);
        return fed_errorf(FED_ETLS, "%s: %s (TLS alert %d)",
                          server ? "the peer ended the TLS session"
                                 : "the coordinator refused the TLS session",
                          words, t->alert_desc);
    }
    char buf[256];
    const char *r = ossl_reason(buf, sizeof buf);
    fed_err code = FED_ETLS;
    if (strstr(r, "certificate") || strstr(r, "unknown ca") || strstr(r, "access denied"))
        code = FED_EAUTH;
    fed_err e = fed_errorf(code, "%s%s", strstr(r, "alert") ? "peer sent " : "TLS error: ", r);
    ERR_clear_error();
    return e;
}

/* ------------------------------------------------------------------------------------ */
/* Context                                                                              */

/* Copies the subject CN of cert into out (size FED_NET_CN_MAX + 1); false when there is
 * none, more than one, or it is not 1..64 printable ASCII characters. */
static bool cert_cn(X509 *cert, char *out) {
    out[0] = '\0';
    X509_NAME *nm = cert ? X509_get_subject_name(cert) : NULL;
    if (!nm) return false;
    int idx = X509_NAME_get_index_by_NID(nm, NID_commonName, -1);
    if (idx < 0 || X509_NAME_get_index_by_NID(nm, NID_commonName, idx) >= 0) return false;
    ASN1_STRING *d = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(nm, idx));
    unsigned char *utf8 = NULL;
    int n = ASN1_STRING_to_UTF8(&utf8, d);
    bool ok = n >= 1 && n <= FED_NET_CN_MAX;
    for (int i = 0; ok && i < n; i++) ok = utf8[i] >= 0x20 && utf8[i] < 0x7f;
    if (ok) {
        memcpy(out, utf8, (size_t)n);
        out[n] = '\0';
    }
    OPENSSL_free(utf8);
    return ok;
}

bool fed__cert_is_admin(X509 *cert) {
    if (!cert) return false;
    EXTENDED_KEY_USAGE *eku = X509_get_ext_d2i(cert, NID_ext_key_usage, NULL, NULL);
    if (!eku) return false;
    ASN1_OBJECT *want = OBJ_txt2obj(FED_ADMIN_EKU_OID, 1);
    bool admin = false;
    for (int i = 0; want && !admin && i < sk_ASN1_OBJECT_num(eku); i++)
        admin = OBJ_cmp(sk_ASN1_OBJECT_value(eku, i), want) == 0;
    ASN1_OBJECT_free(want);
    EXTENDED_KEY_USAGE_free(eku);
    ERR_clear_error();
    return admin;
}

/* Notes the CN of the presented leaf certificate for log lines; never changes a verdict. */
static int verify_cb(int ok, X509_STORE_CTX *x) {
    SSL *ssl = X509_STORE_CTX_get_ex_data(x, SSL_get_ex_data_X509_STORE_CTX_idx());
    fed__tls *t = ssl ? SSL_get_app_data(ssl) : NULL;
    if (t && !t->shown_cn[0]) {
        X509 *leaf = X509_STORE_CTX_get0_cert(x);
        if (leaf) cert_cn(leaf, t->shown_cn);
    }
    return ok;
}

/* Adds the CRLs of path to st and to *kept (made here). */
static fed_err load_crl(X509_STORE *st, const char *path, STACK_OF(X509_CRL) * *kept) {
    BIO *b = BIO_new_file(path, "r");
    if (!b) return ossl_fail(FED_ETLS, path);
    if (!(*kept = sk_X509_CRL_new_null())) {
        BIO_free(b);
        return ossl_fail(FED_ENOMEM, path);
    }
    int n = 0;
    for (X509_CRL *crl; (crl = PEM_read_bio_X509_CRL(b, NULL, NULL, NULL)) != NULL; n++) {
        int ok = X509_STORE_add_crl(st, crl);
        if (ok && !sk_X509_CRL_push(*kept, crl)) ok = 0;
        if (!ok) {
            X509_CRL_free(crl);
            BIO_free(b);
            return ossl_fail(FED_ETLS, path);
        }
    }
    BIO_free(b);
    ERR_clear_error(); /* the loop ends on "no start line" */
    if (n == 0) return fed_errorf(FED_ETLS, "%s: no CRL in the file", path);
    return FED_OK;
}

/* ------------------------------------------------------------------------------------ */
/* Start-up checks of the files (fed_net_check_tls)                                     */

#define PEM_FILE_MAX (16u << 20) /* larger than any certificate bundle or CRL we expect */

void fed__net_skip_checks(bool on) {
    skip_checks = on;
}

fed_err fed__name_error(fed_err err, const char *what) {
    char why[512];
    snprintf(why, sizeof why, "%s", fed_errdetail(err));
    return fed_errorf(err, "%s %s", what, why);
}

const char *fed_net_file_name(fed_net_file f) {
    switch (f) {
    case FED_NET_FILE_CA:
        return "CA file";
    case FED_NET_FILE_CERT:
        return "certificate";
    case FED_NET_FILE_KEY:
        return "key";
    case FED_NET_FILE_CRL:
        return "CRL";
    case FED_NET_FILE_NONE:
        break;
    }
    return "file";
}

/* The first occurrence of needle in text[0..len) (text may hold NUL bytes). */
static const char *find(const char *text, size_t len, const char *needle) {
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= len; i++)
        if (memcmp(text + i, needle, n) == 0) return text + i;
    return NULL;
}

/* What a file holds instead of what was wanted, for messages: " (it holds a PRIVATE KEY)",
 * or " (no -----BEGIN line: not PEM)". */
static void pem_hint(const char *text, size_t len, char *out, size_t size) {
    const char *b = find(text, len, "-----BEGIN ");
    if (!b) {
        snprintf(out, size, " (no -----BEGIN line: not PEM)");
        return;
    }
    b += 11;
    const char *e = find(b, len - (size_t)(b - text), "-----");
    int n = e && e - b < 40 ? (int)(e - b) : 0;
    if (n)
        snprintf(out, size, " (it holds a %.*s)", n, b);
    else
        out[0] = '\0';
}

/* Reads the whole of a PEM file into *out (NUL-terminated, fed_free it); FED_EINVAL with
 * "PATH: what is wrong" when it cannot be what (say "a PEM certificate"). */
static fed_err read_pem(const char *path, const char *what, char **out, size_t *len) {
    *out = NULL;
    *len = 0;
    struct stat st;
    if (stat(path, &st) != 0) return fed_errorf(FED_EINVAL, "%s: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode))
        return fed_errorf(FED_EINVAL, "%s: is a directory, not %s", path, what);
    if (!S_ISREG(st.st_mode))
        return fed_errorf(FED_EINVAL, "%s: not a regular file, so not %s", path, what);
    if (st.st_size == 0) return fed_errorf(FED_EINVAL, "%s: is empty, not %s", path, what);
    if ((unsigned long long)st.st_size > PEM_FILE_MAX)
        return fed_errorf(FED_EINVAL, "%s: %lld bytes, too large for %s", path,
                          (long long)st.st_size, what);
    FILE *f = fopen(path, "rb");
    if (!f) return fed_errorf(FED_EINVAL, "%s: %s", path, strerror(errno));
    size_t size = (size_t)st.st_size;
    char *buf = fed_malloc(size + 1);
    if (!buf) {
        fclose(f);
        return FED_ENOMEM;
    }
    size_t n = fread(buf, 1, size, f);
    int bad = ferror(f);
    fclose(f);
    if (bad || n == 0) {
        fed_free(buf);
        return fed_errorf(FED_EINVAL, "%s: cannot read: %s", path,
                          bad ? strerror(errno) : "no bytes");
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return FED_OK;
}

/* "2021-01-01 00:00:00 UTC". */
static void fmt_time(const ASN1_TIME *t, char out[32]) {
    struct tm tm;
    if (!t || !ASN1_TIME_to_tm(t, &tm) || !strftime(out, 32, "%Y-%m-%d %H:%M:%S UTC", &tm))
        snprintf(out, 32, "an unreadable date");
}

/* 0 when x is valid now; else what is wrong ("expired on ...") in why. */
static int validity(const X509 *x, char *why, size_t size) {
    char d[32];
    const ASN1_TIME *nb = X509_get0_notBefore(x), *na = X509_get0_notAfter(x);
    if (X509_cmp_current_time(nb) > 0) {
        fmt_time(nb, d);
        snprintf(why, size, "not valid before %s", d);
        return 1;
    }
    if (X509_cmp_current_time(na) < 0) {
        fmt_time(na, d);
        snprintf(why, size, "expired on %s", d);
        return -1;
    }
    return 0;
}

/* The CA file: PEM certificates, at least one of them a CA valid now. */
static fed_err check_ca(const char *path, STACK_OF(X509) * *cas) {
    char *text = NULL, why[96] = "", hint[96];
    size_t len;
    fed_err e = read_pem(path, "a PEM CA certificate", &text, &len);
    if (e != FED_OK) return e;
    BIO *b = BIO_new_mem_buf(text, (int)len);
    *cas = sk_X509_new_null();
    if (!b || !*cas) {
        e = FED_ENOMEM;
        goto done;
    }
    for (X509 *x; (x = PEM_read_bio_X509_AUX(b, NULL, NULL, NULL)) != NULL;)
        if (!sk_X509_push(*cas, x)) {
            X509_free(x);
            e = FED_ENOMEM;
            goto done;
        }
    if (sk_X509_num(*cas) == 0) {
        pem_hint(text, len, hint, sizeof hint);
        e = fed_errorf(FED_EINVAL, "%s: not a PEM CA certificate%s", path, hint);
        goto done;
    }
    int cas_seen = 0;
    for (int i = 0; i < sk_X509_num(*cas); i++) {
        X509 *x = sk_X509_value(*cas, i);
        if (X509_check_ca(x) == 0) continue;
        cas_seen++;
        if (validity(x, why, sizeof why) == 0) goto done; /* one good CA is enough */
    }
    if (cas_seen == 0)
        e = fed_errorf(FED_EINVAL,
                       "%s: holds no CA certificate (a site's or the coordinator's certificate?)",
                       path);
    else
        e = fed_errorf(FED_EINVAL, "%s: the CA certificate %s", path, why);
done:
    BIO_free(b);
    fed_free(text);
    return e;
}

/* This side's certificate (the first of the file): valid now, made for this side. */
static fed_err check_cert(const char *path, bool server, X509 **out) {
    char *text = NULL, why[96], hint[96];
    size_t len;
    fed_err e = read_pem(path, "a PEM certificate", &text, &len);
    if (e != FED_OK) return e;
    BIO *b = BIO_new_mem_buf(text, (int)len);
    X509 *x = b ? PEM_read_bio_X509_AUX(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    if (!x) {
        pem_hint(text, len, hint, sizeof hint);
        e = fed_errorf(FED_EINVAL, "%s: not a PEM certificate%s", path, hint);
        goto done;
    }
    *out = x;
    if (validity(x, why, sizeof why) != 0) {
        e = fed_errorf(FED_EINVAL, "%s: %s", path, why);
        goto done;
    }
    if (X509_check_purpose(x, server ? X509_PURPOSE_SSL_SERVER : X509_PURPOSE_SSL_CLIENT, 0) != 1) {
        uint32_t xku = X509_get_extended_key_usage(x);
        bool srv = (xku & XKU_SSL_SERVER) != 0, cli = (xku & XKU_SSL_CLIENT) != 0;
        if (server && fed__cert_is_admin(x))
            e = fed_errorf(FED_EINVAL,
                           "%s: an admin's certificate (fedtune-certs admin), not the "
                           "coordinator's (serverAuth; fedtune-certs coordinator makes one)",
                           path);
        else if (server && cli && !srv)
            e = fed_errorf(FED_EINVAL,
                           "%s: a site certificate (extended key usage clientAuth only), not "
                           "the coordinator's (serverAuth; fedtune-certs coordinator makes one)",
                           path);
        else if (!server && srv && !cli)
            e = fed_errorf(FED_EINVAL,
                           "%s: the coordinator's certificate (extended key usage serverAuth "
                           "only), not a site's (clientAuth; fedtune-certs site makes one)",
                           path);
        else
            e = fed_errorf(FED_EINVAL,
                           "%s: not made for a TLS %s (its key usage or extended key usage lacks "
                           "%s)",
                           path, server ? "server" : "client",
                           server ? "serverAuth" : "clientAuth");
        goto done;
    }
    char cn[FED_NET_CN_MAX + 1];
    if (!server && !cert_cn(x, cn))
        e = fed_errorf(FED_EINVAL,
                       "%s: its subject has no single CN of 1..%d printable characters (a site's "
                       "identity)",
                       path, FED_NET_CN_MAX);
done:
    fed_free(text);
    return e;
}

static int no_passphrase(char *buf, int size, int rwflag, void *u) {
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return 0;
}

/* The private key: PEM, unencrypted, the certificate's. */
static fed_err check_key(const char *path, const char *cert_path, X509 *cert) {
    char *text = NULL, hint[96];
    size_t len;
    fed_err e = read_pem(path, "a PEM private key", &text, &len);
    if (e != FED_OK) return e;
    if (find(text, len, "-----BEGIN ENCRYPTED PRIVATE KEY") || find(text, len, "ENCRYPTED\n")) {
        e = fed_errorf(FED_EINVAL,
                       "%s: an encrypted private key: fedtune cannot ask for its passphrase (keep "
                       "it unencrypted, mode 0600)",
                       path);
        goto done;
    }
    BIO *b = BIO_new_mem_buf(text, (int)len);
    EVP_PKEY *key = b ? PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL) : NULL;
    BIO_free(b);
    if (!key) {
        pem_hint(text, len, hint, sizeof hint);
        e = fed_errorf(FED_EINVAL, "%s: not a PEM private key%s", path, hint);
        goto done;
    }
    if (X509_check_private_key(cert, key) != 1)
        e = fed_errorf(FED_EINVAL, "%s: does not match the certificate %s", path, cert_path);
    EVP_PKEY_free(key);
done:
    fed_free(text);
    return e;
}

/* The CRLs: PEM, in force now, each signed by a CA of the CA file (else every peer
 * would be refused as "unable to get certificate CRL"). */
static fed_err check_crl(const char *path, const char *ca_path, STACK_OF(X509) * cas) {
    char *text = NULL, hint[96], d[32];
    size_t len;
    fed_err e = read_pem(path, "a PEM CRL", &text, &len);
    if (e != FED_OK) return e;
    BIO *b = BIO_new_mem_buf(text, (int)len);
    if (!b) {
        fed_free(text);
        return FED_ENOMEM;
    }
    int n = 0;
    for (X509_CRL *crl; e == FED_OK && (crl = PEM_read_bio_X509_CRL(b, NULL, NULL, NULL)); n++) {
        const ASN1_TIME *last = X509_CRL_get0_lastUpdate(crl);
        const ASN1_TIME *next = X509_CRL_get0_nextUpdate(crl);
        bool signed_ok = false;
        for (int i = 0; !signed_ok && i < sk_X509_num(cas); i++) {
            X509 *ca = sk_X509_value(cas, i);
            signed_ok = X509_NAME_cmp(X509_get_subject_name(ca), X509_CRL_get_issuer(crl)) == 0 &&
                        X509_CRL_verify(crl, X509_get0_pubkey(ca)) == 1;
        }
        if (next && X509_cmp_current_time(next) < 0) {
            fmt_time(next, d);
            e = fed_errorf(FED_EINVAL,
                           "%s: expired on %s (its next update), so every peer would be refused: "
                           "refresh it (fedtune-certs crl)",
                           path, d);
        } else if (last && X509_cmp_current_time(last) > 0) {
            fmt_time(last, d);
            e = fed_errorf(FED_EINVAL, "%s: not valid before %s", path, d);
        } else if (!signed_ok) {
            e = fed_errorf(FED_EINVAL, "%s: not issued by the CA in %s", path, ca_path);
        }
        X509_CRL_free(crl);
    }
    if (e == FED_OK && n == 0) {
        pem_hint(text, len, hint, sizeof hint);
        e = fed_errorf(FED_EINVAL, "%s: no CRL in the file: not a PEM CRL%s", path, hint);
    }
    BIO_free(b);
    fed_free(text);
    return e;
}

fed_err fed_net_check_tls(const fed_net_tls *f, bool coordinator, fed_net_file *which) {
    STACK_OF(X509) *cas = NULL;
    X509 *cert = NULL;
    fed_net_file w = FED_NET_FILE_CA;
    fed_err e = FED_OK;
    ERR_clear_error();
    if (!f || !f->ca_file) {
        e = fed_errorf(FED_EINVAL, "none configured");
        goto done;
    }
    if ((e = check_ca(f->ca_file, &cas)) != FED_OK) goto done;
    if (f->cert_file || f->key_file) {
        w = f->cert_file ? FED_NET_FILE_KEY : FED_NET_FILE_CERT;
        if (!f->cert_file || !f->key_file) {
            e = fed_errorf(FED_EINVAL, "none configured (a certificate needs its key and a key "
                                       "its certificate)");
            goto done;
        }
        w = FED_NET_FILE_CERT;
        if ((e = check_cert(f->cert_file, coordinator, &cert)) != FED_OK) goto done;
        w = FED_NET_FILE_KEY;
        if ((e = check_key(f->key_file, f->cert_file, cert)) != FED_OK) goto done;
    } else if (coordinator) {
        w = FED_NET_FILE_CERT;
        e = fed_errorf(FED_EINVAL, "none configured (the coordinator needs one)");
        goto done;
    }
    w = FED_NET_FILE_CRL;
    if (f->crl_file && (e = check_crl(f->crl_file, f->ca_file, cas)) != FED_OK) goto done;
    w = FED_NET_FILE_NONE;
done:
    ERR_clear_error();
    X509_free(cert);
    sk_X509_pop_free(cas, X509_free);
    if (which) *which = w;
    return e;
}

fed_err fed__tls_ctx_new(fed__tls_ctx **out, bool server, const fed_net_tls *f) {
    *out = NULL;
    if (!f->ca_file) return fed_errorf(FED_EINVAL, "TLS: no CA file configured");
    if (!f->cert_file != !f->key_file)
        return fed_errorf(FED_EINVAL, "TLS: a certificate needs its key and a key its certificate");
    if (server && !f->cert_file)
        return fed_errorf(FED_EINVAL, "TLS: the coordinator needs a certificate");
    fed_net_file which;
    /* "CA file /x/ca.crt: No such file or directory"; running out of memory while
     * reading a file says nothing about the file: FED_ENOMEM as it came. */
    fed_err ce = skip_checks ? FED_OK : fed_net_check_tls(f, server, &which);
    if (ce == FED_ENOMEM) return ce;
    if (ce != FED_OK) return fed__name_error(FED_EINVAL, fed_net_file_name(which));
    ERR_clear_error();
    fed__tls_ctx *c = fed_calloc(1, sizeof *c);
    if (!c) return FED_ENOMEM;
    c->server = server;
    fed_err e = FED_OK;
    SSL_CTX *ctx = c->ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    if (!ctx) {
        e = ossl_fail(FED_ETLS, "SSL_CTX_new");
        goto fail;
    }
    if (!SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
        !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) ||
        !SSL_CTX_set_ciphersuites(
            ctx, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256") ||
        !SSL_CTX_set_num_tickets(ctx, 0)) {
        e = ossl_fail(FED_ETLS, "TLS settings");
        goto fail;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    if (!SSL_CTX_load_verify_locations(ctx, f->ca_file, NULL)) {
        e = ossl_fail(FED_ETLS, f->ca_file);
        goto fail;
    }
    if (f->cert_file) {
        if (!SSL_CTX_use_certificate_chain_file(ctx, f->cert_file)) {
            e = ossl_fail(FED_ETLS, f->cert_file);
            goto fail;
        }
        if (!SSL_CTX_use_PrivateKey_file(ctx, f->key_file, SSL_FILETYPE_PEM)) {
            e = ossl_fail(FED_ETLS, f->key_file);
            goto fail;
        }
        if (!SSL_CTX_check_private_key(ctx)) {
            e = fed_errorf(FED_ETLS, "%s: the key does not match %s", f->key_file, f->cert_file);
            ERR_clear_error();
            goto fail;
        }
    }
    if (server) {
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(f->ca_file);
        if (names) SSL_CTX_set_client_CA_list(ctx, names);
        ERR_clear_error();
    }
    X509_VERIFY_PARAM *param = SSL_CTX_get0_param(ctx);
    if (!X509_VERIFY_PARAM_set_purpose(param, server ? X509_PURPOSE_SSL_CLIENT
                                                     : X509_PURPOSE_SSL_SERVER)) {
        e = ossl_fail(FED_ETLS, "TLS purpose");
        goto fail;
    }
    if (f->crl_file) {
        if ((e = load_crl(SSL_CTX_get_cert_store(ctx), f->crl_file, &c->crls)) != FED_OK) goto fail;
        X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_CRL_CHECK);
    }
    SSL_CTX_set_verify(ctx,
                       server ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT : SSL_VERIFY_PEER,
                       verify_cb);
    SSL_CTX_set_verify_depth(ctx, 4);
    SSL_CTX_set_info_callback(ctx, info_cb);
    *out = c;
    return FED_OK;
fail:
    fed__tls_ctx_destroy(&c);
    return e;
}

/* True when name[0..n) is 1..FED_NET_CN_MAX printable ASCII characters without spaces;
 * else *bad is the offending position (n for a bad length). */
static bool plain_name_ok(const uint8_t *name, size_t n, size_t *bad) {
    *bad = n;
    if (n < 1 || n > FED_NET_CN_MAX) return false;
    for (size_t i = 0; i < n; i++)
        if (name[i] <= 0x20 || name[i] >= 0x7f) {
            *bad = i;
            return false;
        }
    return true;
}

fed_err fed__tls_ctx_new_plain(fed__tls_ctx **out, bool server, const char *identity) {
    *out = NULL;
    size_t len = 0, bad = 0;
    if (!server) {
        if (!identity || !identity[0])
            return fed_errorf(FED_EINVAL,
                              "plaintext client: no identity to claim (1..%d "
                              "printable ASCII characters without spaces)",
                              FED_NET_CN_MAX);
        len = strlen(identity);
        if (len > FED_NET_CN_MAX)
            return fed_errorf(FED_EINVAL, "plaintext client: identity of %zu characters, limit %d",
                              len, FED_NET_CN_MAX);
        if (!plain_name_ok((const uint8_t *)identity, len, &bad))
            return fed_errorf(FED_EINVAL,
                              "plaintext client: identity has byte 0x%02x at position %zu "
                              "(printable ASCII characters without spaces only)",
                              (unsigned char)identity[bad], bad);
    }
    fed__tls_ctx *c = fed_calloc(1, sizeof *c);
    if (!c) return FED_ENOMEM;
    c->server = server;
    c->plain = true;
    if (len) memcpy(c->identity, identity, len + 1);
    c->identity_len = len;
    *out = c;
    return FED_OK;
}

void fed__tls_ctx_destroy(fed__tls_ctx **cp) {
    fed__tls_ctx *c = *cp;
    if (!c) return;
    *cp = NULL;
    SSL_CTX_free(c->ctx);
    sk_X509_CRL_pop_free(c->crls, X509_CRL_free);
    fed_free(c);
}

/* ------------------------------------------------------------------------------------ */
/* Sessions                                                                             */

fed_err fed__tls_new(fed__tls **out, fed__tls_ctx *c, const char *server_name, fed__tls_sink sink,
                     void *user) {
    *out = NULL;
    if (c->plain) {
        fed__tls *t = fed_calloc(1, sizeof *t);
        if (!t) return FED_ENOMEM;
        t->ctx = c;
        t->sink = sink;
        t->user = user;
        if (!c->server) snprintf(t->coord, sizeof t->coord, "%s", server_name);
        *out = t;
        return FED_OK;
    }
    pthread_once(&bio_once, bio_method_init);
    if (!bio_method) return fed_errorf(FED_ENOMEM, "TLS: cannot create the BIO method");
    ERR_clear_error();
    fed__tls *t = fed_calloc(1, sizeof *t);
    if (!t) return FED_ENOMEM;
    t->ctx = c;
    t->sink = sink;
    t->user = user;
    fed_err e = FED_OK;
    BIO *bio = NULL;
    t->ssl = SSL_new(c->ctx);
    if (!t->ssl) {
        e = ossl_fail(FED_ETLS, "SSL_new");
        goto fail;
    }
    SSL_set_app_data(t->ssl, t);
    bio = BIO_new(bio_method);
    if (!bio) {
        e = ossl_fail(FED_ENOMEM, "BIO_new");
        goto fail;
    }
    BIO_set_data(bio, t);
    SSL_set_bio(t->ssl, bio, bio); /* one reference, owned by the SSL now */
    if (c->server) {
        SSL_set_accept_state(t->ssl);
    } else {
        SSL_set_connect_state(t->ssl);
        if (!server_name || !server_name[0]) {
            e = fed_errorf(FED_EINVAL, "TLS: no coordinator name to check");
            goto fail;
        }
        snprintf(t->coord, sizeof t->coord, "%s", server_name);
        unsigned char ip[16];
        int is_ip =
            inet_pton(AF_INET, server_name, ip) == 1 || inet_pton(AF_INET6, server_name, ip) == 1;
        int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), server_name)
                       : SSL_set1_host(t->ssl, server_name) &&
                             SSL_set_tlsext_host_name(t->ssl, server_name);
        if (!ok) {
            e = ossl_fail(FED_EINVAL, server_name);
            goto fail;
        }
        SSL_set_hostflags(t->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    }
    *out = t;
    return FED_OK;
fail:
    fed__tls_destroy(&t);
    return e;
}

void fed__tls_destroy(fed__tls **tp) {
    fed__tls *t = *tp;
    if (!t) return;
    *tp = NULL;
    SSL_free(t->ssl);
    fed_free(t);
}

void fed__tls_input(fed__tls *t, const uint8_t *data, size_t len) {
    t->in = data;
    t->in_len = len;
}

/* ------------------------------------------------------------------------------------ */
/* Plaintext sessions                                                                   */

static fed_err plain_out(fed__tls *t, const void *data, size_t len) {
    if (t->sink(t->user, data, len) != 0)
        return fed_errorf(FED_ENOMEM, "plaintext: no room for %zu bytes in the frame", len);
    return FED_OK;
}

/* Up to the first 8 input bytes in hex, for messages about what came instead. */
static void plain_hex(const fed__tls *t, char out[24]) {
    static const char digits[] = "0123456789abcdef";
    size_t n = t->in_len < 8 ? t->in_len : 8, j = 0;
    for (size_t i = 0; i < n; i++) {
        out[j++] = digits[t->in[i] >> 4];
        out[j++] = digits[t->in[i] & 15];
    }
    if (n < t->in_len) {
        memcpy(out + j, "...", 3);
        j += 3;
    }
    out[j] = '\0';
}

/* True when the input starts with the magic, or with as much of it as there is. */
static bool plain_magic_ok(const fed__tls *t) {
    size_t n = t->in_len < 4 ? t->in_len : 4;
    return memcmp(t->in, plain_magic, n) == 0;
}

/* The coordinator reads the claim (the whole of the client's first frame) and answers. */
static fed_err plain_accept(fed__tls *t) {
    const uint8_t *p = t->in;
    size_t n = t->in_len;
    char hex[24];
    if (!plain_magic_ok(t)) {
        plain_hex(t, hex);
        return fed_errorf(FED_EPROTO, "not a plaintext identity claim: bad magic, starts %s%s", hex,
                          p[0] == 0x16 ? " (a TLS handshake: the client speaks TLS)" : "");
    }
    if (n < PLAIN_HDR)
        return fed_errorf(FED_EPROTO, "truncated plaintext identity claim: %zu bytes", n);
    if (p[4] != PLAIN_VERSION)
        return fed_errorf(FED_EPROTO, "plaintext identity claim of version %u, expected %d",
                          (unsigned)p[4], PLAIN_VERSION);
    size_t len = p[5], bad;
    if (len == 0) return fed_errorf(FED_EPROTO, "plaintext identity claim with an empty name");
    if (len > FED_NET_CN_MAX)
        return fed_errorf(FED_EPROTO, "plaintext identity claim of a %zu-byte name, limit %d", len,
                          FED_NET_CN_MAX);
    if (n < PLAIN_HDR + len)
        return fed_errorf(FED_EPROTO, "truncated plaintext identity claim: %zu of %zu bytes", n,
                          PLAIN_HDR + len);
    if (n > PLAIN_HDR + len)
        return fed_errorf(FED_EPROTO,
                          "plaintext identity claim followed by %zu more bytes in its frame",
                          n - PLAIN_HDR - len);
    if (!plain_name_ok(p + PLAIN_HDR, len, &bad))
        return fed_errorf(FED_EPROTO,
                          "plaintext identity claim with byte 0x%02x at position %zu of the name "
                          "(printable ASCII characters without spaces only)",
                          p[PLAIN_HDR + bad], bad);
    memcpy(t->peer_cn, p + PLAIN_HDR, len);
    t->peer_cn[len] = '\0';
    t->in += n;
    t->in_len = 0;
    uint8_t answer[PLAIN_HDR] = {0};
    memcpy(answer, plain_magic, sizeof plain_magic);
    answer[4] = PLAIN_VERSION; /* and a name of length 0 */
    fed_err e = plain_out(t, answer, sizeof answer);
    if (e == FED_OK) t->plain_step = PLAIN_DONE;
    return e;
}

/* A client sends its claim, then reads the answer (the whole of the coordinator's first
 * frame). */
static fed_err plain_connect(fed__tls *t) {
    if (t->plain_step == PLAIN_START) {
        size_t len = t->ctx->identity_len;
        uint8_t claim[PLAIN_HDR + FED_NET_CN_MAX];
        memcpy(claim, plain_magic, sizeof plain_magic);
        claim[4] = PLAIN_VERSION;
        claim[5] = (uint8_t)len;
        memcpy(claim + PLAIN_HDR, t->ctx->identity, len);
        fed_err e = plain_out(t, claim, PLAIN_HDR + len);
        if (e != FED_OK) return e;
        t->plain_step = PLAIN_CLAIMED;
    }
    if (t->in_len == 0) return FED_EAGAIN;
    const uint8_t *p = t->in;
    char hex[24];
    plain_hex(t, hex);
    if (!plain_magic_ok(t))
        return fed_errorf(
            FED_EPROTO, "the coordinator did not answer in plaintext: bad magic, starts %s%s", hex,
            p[0] == 0x15 || p[0] == 0x16 ? " (a TLS record: the coordinator speaks TLS)" : "");
    if (t->in_len != PLAIN_HDR || p[4] != PLAIN_VERSION || p[5] != 0)
        return fed_errorf(FED_EPROTO, "malformed plaintext answer from the coordinator: %s", hex);
    t->in += t->in_len;
    t->in_len = 0;
    snprintf(t->peer_cn, sizeof t->peer_cn, "%.*s", FED_NET_CN_MAX, t->coord);
    t->plain_step = PLAIN_DONE;
    return FED_OK;
}

static fed_err plain_handshake(fed__tls *t) {
    if (t->plain_step == PLAIN_DONE) return FED_OK;
    if (!t->ctx->server) return plain_connect(t);
    return t->in_len == 0 ? FED_EAGAIN : plain_accept(t);
}

/* ------------------------------------------------------------------------------------ */
/* Handshake, read, write                                                               */

fed_err fed__tls_handshake(fed__tls *t) {
    if (t->ctx->plain) return plain_handshake(t);
    if (!t->started && t->in_len > 0) {
        t->started = true;
        /* Say plainly what a plaintext client looks like from here. */
        if (t->ctx->server && t->in_len >= 4 && memcmp(t->in, plain_magic, 4) == 0)
            return fed_errorf(FED_ETLS, "a plaintext identity claim instead of a TLS handshake: "
                                        "the client runs in plaintext mode");
    }
    ERR_clear_error();
    int r = SSL_do_handshake(t->ssl);
    if (r == 1) {
        X509 *peer = SSL_get0_peer_certificate(t->ssl);
        if (!cert_cn(peer, t->peer_cn))
            return fed_errorf(FED_EAUTH,
                              "certificate refused: its subject has no single printable CN");
        t->admin = t->ctx->server && fed__cert_is_admin(peer);
        return FED_OK;
    }
    if (SSL_get_error(t->ssl, r) == SSL_ERROR_WANT_READ) return FED_EAGAIN;
    return session_fail(t);
}

fed_err fed__tls_read(fed__tls *t, void *buf, size_t len, size_t *got) {
    *got = 0;
    if (t->ctx->plain) {
        if (t->in_len == 0) return FED_EAGAIN;
        size_t n = t->in_len < len ? t->in_len : len;
        memcpy(buf, t->in, n);
        t->in += n;
        t->in_len -= n;
        *got = n;
        return FED_OK;
    }
    ERR_clear_error();
    int r = SSL_read_ex(t->ssl, buf, len, got);
    if (r == 1) return FED_OK;
    switch (SSL_get_error(t->ssl, r)) {
    case SSL_ERROR_WANT_READ:
        return FED_EAGAIN;
    case SSL_ERROR_ZERO_RETURN:
        return fed_errorf(FED_ECLOSED, "the peer closed the TLS session");
    default:
        return session_fail(t);
    }
}

fed_err fed__tls_write(fed__tls *t, const void *buf, size_t len) {
    if (len == 0) return FED_OK;
    if (t->ctx->plain) return plain_out(t, buf, len);
    ERR_clear_error();
    size_t done = 0;
    if (SSL_write_ex(t->ssl, buf, len, &done) == 1 && done == len) return FED_OK;
    return session_fail(t);
}

bool fed__tls_has_leftover(const fed__tls *t) {
    return t->in_len > 0 || (t->ssl && SSL_has_pending(t->ssl));
}

bool fed__tls_refused(const fed__tls *t) {
    return t->refused;
}

const char *fed__tls_peer_cn(const fed__tls *t) {
    return t->peer_cn;
}

const char *fed_net_role_name(fed_net_role r) {
    return r == FED_NET_ROLE_ADMIN ? "admin" : "site";
}

fed_err fed_net_cert_role(const char *path, fed_net_role *role) {
    *role = FED_NET_ROLE_SITE;
    char *text = NULL;
    size_t len;
    fed_err e = read_pem(path, "a PEM certificate", &text, &len);
    if (e != FED_OK) return e;
    BIO *b = BIO_new_mem_buf(text, (int)len);
    X509 *x = b ? PEM_read_bio_X509_AUX(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    fed_free(text);
    ERR_clear_error();
    if (!x) return fed_errorf(FED_EINVAL, "%s: not a PEM certificate", path);
    if (fed__cert_is_admin(x)) *role = FED_NET_ROLE_ADMIN;
    X509_free(x);
    return FED_OK;
}

bool fed__tls_peer_admin(const fed__tls *t) {
    return t->admin;
}

bool fed__tls_revoked(const fed__tls *t) {
    X509 *peer = t->ssl ? SSL_get0_peer_certificate(t->ssl) : NULL;
    if (!peer || !t->ctx->crls) return false;
    for (int i = 0; i < sk_X509_CRL_num(t->ctx->crls); i++) {
        X509_REVOKED *r = NULL;
        if (X509_CRL_get0_by_cert(sk_X509_CRL_value(t->ctx->crls, i), &r, peer) == 1) return true;
    }
    return false;
}

fed_err fed__tls_ctx_reload_crl(fed__tls_ctx *c, const fed_net_tls *f) {
    if (c->plain || !c->ctx) return fed_errorf(FED_EINVAL, "plaintext mode has no CRL");
    if (!f->crl_file || !c->crls)
        return fed_errorf(FED_EINVAL, "no CRL file configured (the coordinator's --crl)");
    STACK_OF(X509) *cas = NULL;
    ERR_clear_error();
    fed_err e = skip_checks ? FED_OK : check_ca(f->ca_file, &cas);
    if (e == FED_OK && !skip_checks) e = check_crl(f->crl_file, f->ca_file, cas);
    sk_X509_pop_free(cas, X509_free);
    if (e != FED_OK) return e;
    X509_STORE *st = X509_STORE_new();
    STACK_OF(X509_CRL) *crls = NULL;
    if (!st) return ossl_fail(FED_ENOMEM, "X509_STORE_new");
    if (X509_STORE_load_file(st, f->ca_file) != 1) {
        X509_STORE_free(st);
        return ossl_fail(FED_ETLS, f->ca_file);
    }
    if ((e = load_crl(st, f->crl_file, &crls)) != FED_OK) {
        X509_STORE_free(st);
        sk_X509_CRL_pop_free(crls, X509_CRL_free);
        return e;
    }
    SSL_CTX_set_cert_store(c->ctx, st); /* frees the old store; new handshakes use st */
    sk_X509_CRL_pop_free(c->crls, X509_CRL_free);
    c->crls = crls;
    return FED_OK;
}

const char *fed__tls_presented_cn(const fed__tls *t) {
    return t->shown_cn;
}

size_t fed__tls_bound(size_t len) {
    /* TLS 1.3 record: 5-byte header, content-type byte, 16-byte AEAD tag, at most 16 KiB
     * of plaintext; plus slack for a record OpenSSL might add on its own (KeyUpdate). */
    return len + (len / 16384 + 1) * (5 + 1 + 16) + 256;
}

/* ------------------------------------------------------------------------------------ */
/* SHA-256 and randomness                                                               */

fed_err fed__sha256_new(fed__sha256 **out) {
    *out = NULL;
    fed__sha256 *h = fed_calloc(1, sizeof *h);
    if (!h) return FED_ENOMEM;
    h->md = EVP_MD_CTX_new();
    if (!h->md || !EVP_DigestInit_ex(h->md, EVP_sha256(), NULL)) {
        fed__sha256_destroy(&h);
        return ossl_fail(FED_ENOMEM, "SHA-256");
    }
    *out = h;
    return FED_OK;
}

void fed__sha256_update(fed__sha256 *h, const void *data, size_t len) {
    if (len) EVP_DigestUpdate(h->md, data, len);
}

void fed__sha256_final(fed__sha256 *h, uint8_t out[FED_SHA256_LEN]) {
    unsigned int n = 0;
    EVP_DigestFinal_ex(h->md, out, &n);
}

void fed__sha256_destroy(fed__sha256 **hp) {
    fed__sha256 *h = *hp;
    if (!h) return;
    *hp = NULL;
    EVP_MD_CTX_free(h->md);
    fed_free(h);
}

void fed_sha256(const void *data, size_t len, uint8_t out[FED_SHA256_LEN]) {
    unsigned int n = 0;
    EVP_Digest(data, len, out, &n, EVP_sha256(), NULL);
}

fed_err fed__random(void *buf, size_t len) {
    if (len > (size_t)1 << 30 || RAND_bytes(buf, (int)len) != 1)
        return ossl_fail(FED_EINTERNAL, "RAND_bytes");
    return FED_OK;
}
