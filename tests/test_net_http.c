/* Tests of the administrator role's check, fed_net_verify_admin_der (net/admin.h), on
 * certificate chains as DER: an admin certificate (clientAuth plus the admin EKU, made
 * here with the openssl command line) passes with its CN; a site's certificate, one with
 * the admin EKU but without clientAuth, another CA's, a revoked one, no chain and bytes
 * that are not DER (garbage, truncated, trailing bytes, oversized) are refused with the
 * exact reason; unreadable CA and CRL files are errors of their own. Also the monitoring
 * server's address check, fed_http_check_addr, on good and malformed addresses. */
#include "net/admin.h"
#include "net/http.h"
#include "tests/test_net_common.h"

/* The DER bytes of certdir/rel (a file openssl wrote); len set. Caller frees. */
static uint8_t *der_file(const char *rel, size_t *len) {
    *len = 0;
    FILE *f = fopen(cpath(rel), "rb");
    if (!f) return NULL;
    uint8_t *buf = malloc(1 << 16);
    if (buf) *len = fread(buf, 1, 1 << 16, f);
    fclose(f);
    return buf;
}

/* Verifies the one certificate rel (DER) against ca and crl. */
static fed_err verify1(const char *rel, const char *ca, const char *crl, char *cn, size_t size) {
    size_t len;
    uint8_t *der = der_file(rel, &len);
    const uint8_t *chain[1] = {der};
    fed_err err = fed_net_verify_admin_der(chain, &len, der ? 1 : 0, ca, crl, cn, size);
    free(der);
    return err;
}

#define CA  cpath("ca/ca.crt")
#define CRL cpath("admin-crl.pem")

TEST(admin_passes) {
    char cn[64] = "x";
    CHECK_OK(verify1("alice.der", CA, CRL, cn, sizeof cn));
    CHECK_STR(cn, "alice");
    CHECK_OK(verify1("alice.der", CA, NULL, cn, sizeof cn)); /* no CRL: no revocation check */
    char small[4];
    CHECK_OK(verify1("alice.der", CA, CRL, small, sizeof small));
    CHECK_STR(small, "ali"); /* truncated, terminated */
    CHECK_OK(verify1("alice.der", CA, CRL, NULL, 0));
}

TEST(not_admins) {
    char cn[64] = "x";
    CHECK_ERR(verify1("site-1.der", CA, CRL, cn, sizeof cn), FED_EAUTH);
    CHECK_STR(fed_errmsg(), "CN site-1: not an admin certificate (no extended key usage "
                            "2.25.119735425215181750697262863098642166956)");
    CHECK_STR(cn, "");
    CHECK_ERR(verify1("coord.der", CA, CRL, cn, sizeof cn), FED_EAUTH);
    CHECK_STR(fed_errmsg(), "certificate refused: not a client certificate (no extended "
                            "key usage clientAuth)");
    CHECK_ERR(verify1("noclient.der", CA, CRL, cn, sizeof cn), FED_EAUTH);
    CHECK_STR(fed_errmsg(), "certificate refused: not a client certificate (no extended "
                            "key usage clientAuth)");
    CHECK_ERR(verify1("intruder.der", CA, CRL, cn, sizeof cn), FED_EAUTH);
    CHECK_STR(fed_errmsg(), "certificate refused: unable to get local issuer certificate");
    CHECK_ERR(verify1("mallory.der", CA, CRL, cn, sizeof cn), FED_EAUTH);
    CHECK_STR(fed_errmsg(), "certificate refused: certificate revoked");
    CHECK_STR(cn, "");
    CHECK_OK(verify1("mallory.der", CA, NULL, cn, sizeof cn)); /* revoked only in the CRL */
    CHECK_STR(cn, "mallory");
}

TEST(malformed_chains) {
    char cn[64];
    CHECK_ERR(fed_net_verify_admin_der(NULL, NULL, 0, CA, CRL, cn, sizeof cn), FED_EAUTH);
    CHECK_STR(fed_errmsg(), "no client certificate");
    size_t len;
    uint8_t *der = der_file("alice.der", &len);
    CHECK(der != NULL && len > 100);
    if (!der) return;
    const uint8_t *chain[2] = {der, der};
    size_t lens[2] = {len - 1, len};
    CHECK_ERR(fed_net_verify_admin_der(chain, lens, 1, CA, CRL, cn, sizeof cn), FED_EAUTH);
    CHECK_STR(fed_errmsg(), "certificate 0 of the peer's chain is not DER");
    lens[0] = 10;
    CHECK_ERR(fed_net_verify_admin_der(chain, lens, 1, CA, CRL, cn, sizeof cn), FED_EAUTH);
    CHECK_STR(fed_errmsg(), "certificate 0 of the peer's chain is not DER");
    uint8_t *longer = malloc(len + 1);
    memcpy(longer, der, len);
    longer[len] = 0; /* a trailing byte */
    chain[1] = longer;
    lens[0] = len;
    lens[1] = len + 1;
    CHECK_ERR(fed_net_verify_admin_der(chain, lens, 2, CA, CRL, cn, sizeof cn), FED_EAUTH);
    CHECK_STR(fed_errmsg(), "certificate 1 of the peer's chain is not DER");
    uint8_t garbage[300];
    for (size_t i = 0; i < sizeof garbage; i++) garbage[i] = (uint8_t)(i * 7 + 3);
    chain[0] = garbage;
    lens[0] = sizeof garbage;
    CHECK_ERR(fed_net_verify_admin_der(chain, lens, 1, CA, CRL, cn, sizeof cn), FED_EAUTH);
    CHECK_STR(fed_errmsg(), "certificate 0 of the peer's chain is not DER");
    chain[0] = der;
    lens[0] = (size_t)1 << 20; /* never read: over the limit */
    CHECK_ERR(fed_net_verify_admin_der(chain, lens, 1, CA, CRL, cn, sizeof cn), FED_EAUTH);
    CHECK_STR(fed_errmsg(), "certificate 0 of the peer's chain is not DER");
    /* An admin followed by an untrusted extra certificate still verifies. */
    chain[1] = der;
    lens[0] = lens[1] = len;
    CHECK_OK(fed_net_verify_admin_der(chain, lens, 2, CA, CRL, cn, sizeof cn));
    free(longer);
    free(der);
}

TEST(bad_files) {
    char cn[64];
    CHECK_ERR(verify1("alice.der", cpath("nope.crt"), NULL, cn, sizeof cn), FED_ETLS);
    CHECK_CONTAINS(fed_errmsg(), "nope.crt: cannot be read as PEM certificates");
    CHECK_ERR(verify1("alice.der", CA, cpath("ca/ca.crt"), cn, sizeof cn), FED_ETLS);
    CHECK_CONTAINS(fed_errmsg(), "ca/ca.crt: cannot be read as a PEM CRL");
}

TEST(http_addresses) {
    CHECK_OK(fed_http_check_addr("127.0.0.1:9464", false));
    CHECK_OK(fed_http_check_addr("127.0.0.2:0", false));
    CHECK_OK(fed_http_check_addr("localhost:1", false));
    CHECK_OK(fed_http_check_addr("0.0.0.0:9464", true));
    CHECK_OK(fed_http_check_addr("10.1.2.3:65535", true));
    static const char *const bad[][2] = {
        {"", ": no port: write HOST:PORT (127.0.0.1:9464)"},
        {"127.0.0.1", "127.0.0.1: no port: write HOST:PORT (127.0.0.1:9464)"},
        {":80", ":80: no host: write HOST:PORT"},
        {"127.0.0.1:", "127.0.0.1:: port \"\" is outside 0..65535"},
        {"127.0.0.1:x", "127.0.0.1:x: port \"x\" is outside 0..65535"},
        {"127.0.0.1:-1", "127.0.0.1:-1: port \"-1\" is outside 0..65535"},
        {"127.0.0.1:65536", "127.0.0.1:65536: port \"65536\" is outside 0..65535"},
        {"127.0.0.1:80x", "127.0.0.1:80x: port \"80x\" is outside 0..65535"},
        {"256.0.0.1:80", "256.0.0.1:80: \"256.0.0.1\" is not an IPv4 address or localhost"},
        {"::1:80", "::1:80: \"::1\" is not an IPv4 address or localhost"},
        {"example.org:80", "example.org:80: \"example.org\" is not an IPv4 address or localhost"},
        {"10.0.0.1:80", "10.0.0.1:80: not a loopback address: serving it needs TLS with admin "
                        "client certificates (--http-tls)"},
        {"0.0.0.0:80", "0.0.0.0:80: not a loopback address: serving it needs TLS with admin "
                       "client certificates (--http-tls)"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_ERR(fed_http_check_addr(bad[i][0], false), FED_EINVAL);
        CHECK_STR(fed_errmsg(), bad[i][1]);
    }
    CHECK_ERR(fed_http_check_addr(NULL, true), FED_EINVAL);
    char longhost[200];
    memset(longhost, '1', sizeof longhost);
    memcpy(longhost + sizeof longhost - 4, ":80", 4);
    CHECK_ERR(fed_http_check_addr(longhost, true), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), ": no host: write HOST:PORT");
}

/* Admin certificates signed by the CA: alice; mallory, revoked in admin-crl.pem; one with
 * the admin EKU but not clientAuth; and DER copies of those and of a site's, the
 * coordinator's and another CA's certificates. */
static int admin_files(void) {
    const char *q = ">/dev/null 2>&1";
    int rc = 0;
    static const char *const ekus[][2] = {
        {"alice", "clientAuth,2.25.119735425215181750697262863098642166956"},
        {"mallory", "clientAuth,2.25.119735425215181750697262863098642166956"},
        {"noclient", "2.25.119735425215181750697262863098642166956"},
    };
    for (size_t i = 0; i < 3; i++) {
        const char *n = ekus[i][0];
        rc |= sh("cd %s && printf 'basicConstraints=critical,CA:FALSE\\nkeyUsage=critical,"
                 "digitalSignature\\nextendedKeyUsage=%s\\n' > %s.ext && openssl req -new "
                 "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout %s.key -subj /CN=%s "
                 "-out %s.csr %s && openssl x509 -req -in %s.csr -CA ca/ca.crt -CAkey ca/ca.key "
                 "-CAcreateserial -days 30 -extfile %s.ext -out %s.crt %s && openssl x509 -in "
                 "%s.crt -outform DER -out %s.der %s",
                 certdir, ekus[i][1], n, n, n, n, q, n, n, n, q, n, n, q);
    }
    rc |= sh("cd %s && export FEDTUNE_CA_DIR=ca && openssl ca -config ca/openssl.cnf -revoke "
             "mallory.crt %s && openssl ca -gencrl -config ca/openssl.cnf -out admin-crl.pem %s",
             certdir, q, q);
    rc |= sh("cd %s && openssl x509 -in ca/sites/site-1/site-1.crt -outform DER -out site-1.der && "
             "openssl x509 -in ca/coordinator/localhost.crt -outform DER -out coord.der && "
             "openssl x509 -in ca2/sites/intruder/intruder.crt -outform DER -out intruder.der",
             certdir);
    return rc;
}

int main(void) {
    fed_log_set_handler(log_handler, NULL, FED_LOG_DEBUG);
    if (certs_make() != 0 || admin_files() != 0) {
        fprintf(stderr, "cannot make test certificates with %s and openssl\n", FED_CERTS_SCRIPT);
        certs_remove();
        return 1;
    }
    RUN(admin_passes);
    RUN(not_admins);
    RUN(malformed_chains);
    RUN(bad_files);
    RUN(http_addresses);
    certs_remove();
    return test_report();
}
