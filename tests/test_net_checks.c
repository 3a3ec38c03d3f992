/* Tests of the channel's start-up checks, which refuse with words what would otherwise
 * fail every handshake or retry forever: fed_net_check_tls on each file of either side
 * (missing, a folder, empty, not PEM, the wrong kind of PEM, an encrypted key, a key of
 * another certificate, expired or not yet valid, made for the other side, a CA file
 * without a CA, CRLs that expired, are not yet valid or come from another CA) with the
 * file it names and the exact message, and fed_net_check_endpoint on good and bad
 * endpoints for connecting and for binding. Certificates from certs/fedtune-certs and
 * the openssl command line in a temporary folder; no sockets. */
#include "tests/test_net_common.h"

#include <sys/stat.h>

/* The files of site `name` of CA "ca" (or of the coordinator when name is NULL). */
static fed_net_tls files(const char *name) {
    static char crt[320], key[320];
    fed_net_tls f = {0};
    f.ca_file = cpath("ca/ca.crt");
    if (name) {
        snprintf(crt, sizeof crt, "%s/ca/sites/%s/%s.crt", certdir, name, name);
        snprintf(key, sizeof key, "%s/ca/sites/%s/%s.key", certdir, name, name);
    } else {
        snprintf(crt, sizeof crt, "%s", cpath("ca/coordinator/localhost.crt"));
        snprintf(key, sizeof key, "%s", cpath("ca/coordinator/localhost.key"));
    }
    f.cert_file = crt;
    f.key_file = key;
    return f;
}

/* fed_net_check_tls refuses f with FED_EINVAL, names file `which` and says "PATH: why". */
static void refused(fed_net_tls f, bool coordinator, fed_net_file which, const char *path,
                    const char *why) {
    fed_net_file w = FED_NET_FILE_NONE;
    CHECK_ERR(fed_net_check_tls(&f, coordinator, &w), FED_EINVAL);
    CHECK_INT(w, which);
    char want[1024];
    snprintf(want, sizeof want, "%s%s%s", path, why[0] ? ": " : "", why);
    if (strcmp(why, "not valid before") == 0)
        CHECK_CONTAINS(fed_errmsg(), want);
    else
        CHECK_STR(fed_errmsg(), want);
}

TEST(good_files) {
    fed_net_file w = FED_NET_FILE_CA;
    fed_net_tls f = files("site-1");
    CHECK_OK(fed_net_check_tls(&f, false, &w));
    CHECK_INT(w, FED_NET_FILE_NONE);
    f.crl_file = cpath("ca/crl.pem");
    CHECK_OK(fed_net_check_tls(&f, false, NULL));
    f = files(NULL);
    f.crl_file = cpath("ca/crl.pem");
    CHECK_OK(fed_net_check_tls(&f, true, &w));
    /* A client without a certificate (tests only): the CA alone. */
    f.cert_file = f.key_file = NULL;
    CHECK_OK(fed_net_check_tls(&f, false, &w));
    CHECK_STR(fed_net_file_name(FED_NET_FILE_CA), "CA file");
    CHECK_STR(fed_net_file_name(FED_NET_FILE_CERT), "certificate");
    CHECK_STR(fed_net_file_name(FED_NET_FILE_KEY), "key");
    CHECK_STR(fed_net_file_name(FED_NET_FILE_CRL), "CRL");
}

TEST(ca_file) {
    fed_net_tls f = files("site-1");
    f.ca_file = cpath("nope/ca.crt");
    refused(f, false, FED_NET_FILE_CA, f.ca_file, "No such file or directory");
    f.ca_file = certdir;
    refused(f, false, FED_NET_FILE_CA, certdir, "is a directory, not a PEM CA certificate");
    f.ca_file = cpath("empty.pem");
    refused(f, false, FED_NET_FILE_CA, f.ca_file, "is empty, not a PEM CA certificate");
    f.ca_file = cpath("ca.der");
    refused(f, false, FED_NET_FILE_CA, f.ca_file,
            "not a PEM CA certificate (no -----BEGIN line: not PEM)");
    f.ca_file = cpath("ca/ca.key");
    refused(f, false, FED_NET_FILE_CA, f.ca_file,
            "not a PEM CA certificate (it holds a PRIVATE KEY)");
    f.ca_file = cpath("ca/sites/site-2/site-2.crt");
    refused(f, false, FED_NET_FILE_CA, f.ca_file,
            "holds no CA certificate (a site's or the coordinator's certificate?)");
    f.ca_file = cpath("old-ca/expired-ca.crt");
    refused(f, false, FED_NET_FILE_CA, f.ca_file,
            "the CA certificate expired on 2021-01-01 00:00:00 UTC");
    f.ca_file = NULL;
    refused(f, false, FED_NET_FILE_CA, "none configured", "");
}

TEST(cert_file) {
    fed_net_tls f = files("site-1");
    f.cert_file = cpath("nope.crt");
    refused(f, false, FED_NET_FILE_CERT, f.cert_file, "No such file or directory");
    f.cert_file = "/tmp";
    refused(f, false, FED_NET_FILE_CERT, "/tmp", "is a directory, not a PEM certificate");
    f.cert_file = cpath("ca/sites/site-1/site-1.key"); /* swapped with the key */
    refused(f, false, FED_NET_FILE_CERT, f.cert_file,
            "not a PEM certificate (it holds a PRIVATE KEY)");
    f = files("expired");
    refused(f, false, FED_NET_FILE_CERT, f.cert_file, "expired on 2021-01-01 00:00:00 UTC");
    f = files("future");
    refused(f, false, FED_NET_FILE_CERT, f.cert_file, "not valid before");
    CHECK_CONTAINS(fed_errmsg(), "-01-01 00:00:00 UTC");
    /* Made for the other side. */
    f = files(NULL);
    refused(f, false, FED_NET_FILE_CERT, f.cert_file,
            "the coordinator's certificate (extended key usage serverAuth only), not a site's "
            "(clientAuth; fedtune-certs site makes one)");
    f = files("site-6");
    refused(f, true, FED_NET_FILE_CERT, f.cert_file,
            "a site certificate (extended key usage clientAuth only), not the coordinator's "
            "(serverAuth; fedtune-certs coordinator makes one)");
    /* Neither: code signing only. */
    f.cert_file = cpath("codesign.crt");
    f.key_file = cpath("codesign.key");
    refused(f, true, FED_NET_FILE_CERT, f.cert_file,
            "not made for a TLS server (its key usage or extended key usage lacks serverAuth)");
    /* The coordinator needs one; a certificate needs its key. */
    f = files(NULL);
    f.cert_file = f.key_file = NULL;
    refused(f, true, FED_NET_FILE_CERT, "none configured (the coordinator needs one)", "");
    f = files("site-1");
    f.key_file = NULL;
    refused(f, false, FED_NET_FILE_KEY,
            "none configured (a certificate needs its key and a key its certificate)", "");
}

TEST(key_file) {
    fed_net_tls f = files("site-1");
    f.key_file = cpath("nope.key");
    refused(f, false, FED_NET_FILE_KEY, f.key_file, "No such file or directory");
    f.key_file = certdir;
    refused(f, false, FED_NET_FILE_KEY, certdir, "is a directory, not a PEM private key");
    f.key_file = cpath("ca/sites/site-1/site-1.crt");
    refused(f, false, FED_NET_FILE_KEY, f.key_file,
            "not a PEM private key (it holds a CERTIFICATE)");
    f.key_file = cpath("ca/sites/site-2/site-2.key");
    char why[512];
    snprintf(why, sizeof why, "does not match the certificate %s", f.cert_file);
    refused(f, false, FED_NET_FILE_KEY, f.key_file, why);
    f.key_file = cpath("encrypted.key");
    refused(f, false, FED_NET_FILE_KEY, f.key_file,
            "an encrypted private key: fedtune cannot ask for its passphrase (keep it "
            "unencrypted, mode 0600)");
}

TEST(crl_file) {
    fed_net_tls f = files("site-1");
    f.crl_file = cpath("nope.pem");
    refused(f, false, FED_NET_FILE_CRL, f.crl_file, "No such file or directory");
    f.crl_file = cpath("ca");
    refused(f, false, FED_NET_FILE_CRL, f.crl_file, "is a directory, not a PEM CRL");
    f.crl_file = cpath("ca/ca.crt");
    refused(f, false, FED_NET_FILE_CRL, f.crl_file,
            "no CRL in the file: not a PEM CRL (it holds a CERTIFICATE)");
    f.crl_file = cpath("old-crl.pem");
    refused(f, false, FED_NET_FILE_CRL, f.crl_file,
            "expired on 2020-02-01 00:00:00 UTC (its next update), so every peer would be "
            "refused: refresh it (fedtune-certs crl)");
    f.crl_file = cpath("future-crl.pem");
    refused(f, false, FED_NET_FILE_CRL, f.crl_file, "not valid before");
    f.crl_file = cpath("ca2/crl.pem");
    char why[512];
    snprintf(why, sizeof why, "not issued by the CA in %s", f.ca_file);
    refused(f, false, FED_NET_FILE_CRL, f.crl_file, why);
}

/* fed_net_check_endpoint refuses ep with exactly "ep: why". */
static void bad_endpoint(const char *ep, bool bind, const char *why) {
    CHECK_ERR(fed_net_check_endpoint(ep, bind), FED_EINVAL);
    char want[512];
    snprintf(want, sizeof want, "%s: %s", ep, why);
    CHECK_STR(fed_errmsg(), want);
}

TEST(endpoints) {
    const char *good_both[] = {"tcp://127.0.0.1:7443",    "tcp://fed.example.org:1",
                               "tcp://localhost:65535",   "tcp://[::1]:7443",
                               "tcp://[2001:db8::7]:443", "inproc://fedsim-1-2",
                               "tcp://site_7.internal:80"};
    for (size_t i = 0; i < sizeof good_both / sizeof *good_both; i++) {
        CHECK_OK(fed_net_check_endpoint(good_both[i], false));
        CHECK_OK(fed_net_check_endpoint(good_both[i], true));
    }
    CHECK_OK(fed_net_check_endpoint("tcp://*:7443", true));
    CHECK_OK(fed_net_check_endpoint("tcp://127.0.0.1:0", true));
    CHECK_OK(fed_net_check_endpoint("tcp://0.0.0.0:*", true));
    CHECK_OK(fed_net_check_endpoint("tcp://eth0:7443", true));

    bad_endpoint("localhost:7443", false, "no transport: write tcp://localhost:7443");
    bad_endpoint("fed.example.org", false, "not an endpoint: expected tcp://HOST:PORT");
    bad_endpoint("7443", true, "not an endpoint: expected tcp://HOST:PORT (or tcp://*:PORT)");
    bad_endpoint("ipc:///tmp/x", false,
                 "transport \"ipc\" not supported: tcp://HOST:PORT or inproc://NAME");
    bad_endpoint("udp://127.0.0.1:7443", true,
                 "transport \"udp\" not supported: tcp://HOST:PORT or inproc://NAME");
    bad_endpoint("tcp://127.0.0.1:99999", true, "port 99999 is outside 0..65535 (0: a free port)");
    bad_endpoint("tcp://127.0.0.1:99999", false, "port 99999 is outside 1..65535");
    bad_endpoint("tcp://127.0.0.1:0", false, "port 0 is outside 1..65535");
    bad_endpoint("tcp://127.0.0.1:", false, "no port: tcp://HOST:PORT");
    bad_endpoint("tcp://localhost", false, "no port: tcp://HOST:PORT");
    bad_endpoint("tcp://:7443", true, "no host: tcp://HOST:PORT");
    bad_endpoint("tcp://127.0.0.1:74a3", false, "port \"74a3\" is not a number in 1..65535");
    bad_endpoint("tcp://127.0.0.1:-1", true, "port \"-1\" is not a number in 0..65535");
    bad_endpoint("tcp://127.0.0.1:*", false, "port \"*\" is for listening: give the port number");
    bad_endpoint("tcp://*:7443", false,
                 "\"*\" (every interface) is for listening, not for connecting: name the "
                 "coordinator's host");
    bad_endpoint("tcp://256.1.1.1:1", true, "the host is not a valid IPv4 address");
    bad_endpoint("tcp://::1:7443", false,
                 "a colon in the host (an IPv6 address goes in brackets: tcp://[::1]:PORT)");
    bad_endpoint("tcp://[::1:7443", false, "no ']' after the IPv6 address");
    bad_endpoint("tcp://[fed]:7443", false, "\"fed\" is not an IPv6 address");
    bad_endpoint("tcp://[::1]7443", false, "no port: tcp://HOST:PORT");
    bad_endpoint("tcp://a;b:7443", false,
                 "the host may hold only letters, digits, '-', '.' and '_'");
    bad_endpoint("tcp://-x:7443", false, "the host must start with a letter or a digit");
    bad_endpoint("inproc://", false, "inproc:// needs a name of 1..255 characters");
    bad_endpoint("inproc://a b", false, "the inproc:// name may hold printable characters only");
    CHECK_ERR(fed_net_check_endpoint("", false), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "no endpoint: expected tcp://HOST:PORT or inproc://NAME");
    CHECK_ERR(fed_net_check_endpoint(NULL, true), FED_EINVAL);
}

/* Extra files next to certs_make()'s: broken ones, an old CA, odd CRLs, a code-signing
 * certificate, an encrypted key. */
static int extra_files(void) {
    const char *q = ">/dev/null 2>&1";
    const char *s = FED_CERTS_SCRIPT;
    int rc = sh(": > %s", cpath("empty.pem"));
    rc |= sh("openssl x509 -in %s -outform DER -out %s %s", cpath("ca/ca.crt"), cpath("ca.der"), q);
    /* An expired CA: a CA's key self-signed again with dates in the past. */
    rc |= sh("%s init-ca %s/old-ca %s", s, certdir, q);
    rc |= sh("cd %s/old-ca && export FEDTUNE_CA_DIR=. && openssl req -new -key ca.key -subj "
             "/CN=old -out old.csr -config openssl.cnf %s && openssl ca -batch -selfsign "
             "-notext -config openssl.cnf -keyfile ca.key -in old.csr -startdate 20200101000000Z "
             "-enddate 20210101000000Z -extensions v3_ca -out expired-ca.crt %s",
             certdir, q, q);
    rc |= sh("cd %s && FEDTUNE_CA_DIR=ca openssl ca -gencrl -config ca/openssl.cnf "
             "-crl_lastupdate 20200101000000Z -crl_nextupdate 20200201000000Z -out old-crl.pem %s",
             certdir, q);
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    int y = tm.tm_year + 1900 + 2;
    rc |= sh("cd %s && FEDTUNE_CA_DIR=ca openssl ca -gencrl -config ca/openssl.cnf "
             "-crl_lastupdate %d0101000000Z -crl_nextupdate %d0201000000Z -out future-crl.pem %s",
             certdir, y, y, q);
    rc |= sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout %s "
             "-out %s -subj /CN=signer -days 30 -addext extendedKeyUsage=codeSigning %s",
             cpath("codesign.key"), cpath("codesign.crt"), q);
    rc |= sh("openssl pkey -in %s -aes256 -passout pass:secret -out %s %s",
             cpath("ca/sites/site-1/site-1.key"), cpath("encrypted.key"), q);
    return rc;
}

int main(void) {
    fed_log_set_handler(log_handler, NULL, FED_LOG_DEBUG);
    if (certs_make() != 0 || extra_files() != 0) {
        fprintf(stderr, "cannot make test certificates with %s and openssl\n", FED_CERTS_SCRIPT);
        certs_remove();
        return 1;
    }
    RUN(good_files);
    RUN(ca_file);
    RUN(cert_file);
    RUN(key_file);
    RUN(crl_file);
    RUN(endpoints);
    certs_remove();
    return test_report();
}
