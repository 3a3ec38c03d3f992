/* The monitoring HTTP server (net/http.h) over libmicrohttpd, the only file that includes
 * it (and GnuTLS, for the peer's certificates). Requests are answered whole on the first
 * call of the access handler: nothing here reads a request body. */
#include "net/http.h"

#include "core/alloc.h"
#include "core/log.h"
#include "net/admin.h"

#include <arpa/inet.h>
#include <errno.h>
#include <gnutls/gnutls.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define URL_MAX   256       /* longer URLs get 414 */
#define PEM_MAX   (1 << 20) /* largest certificate or key file read */
#define CHAIN_MAX 8         /* peer certificates looked at */

struct fed_http {
    struct MHD_Daemon *d;
    fed_http_config cfg;
    char *cert_pem, *key_pem, *ca_pem; /* tls: kept while the daemon runs */
    char addr[64];                     /* bound, "127.0.0.1:PORT" */
};

/* HOST:PORT into sin; FED_EINVAL naming the fault. */
static fed_err parse_addr(const char *addr, struct sockaddr_in *sin) {
    memset(sin, 0, sizeof *sin);
    sin->sin_family = AF_INET;
    const char *colon = addr ? strrchr(addr, ':') : NULL;
    if (!colon)
        return fed_errorf(FED_EINVAL, "%s: no port: write HOST:PORT (127.0.0.1:9464)",
                          addr ? addr : "");
    char host[64];
    size_t hl = (size_t)(colon - addr);
    if (hl == 0 || hl >= sizeof host)
        return fed_errorf(FED_EINVAL, "%s: no host: write HOST:PORT", addr);
    memcpy(host, addr, hl);
    host[hl] = '\0';
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (!colon[1] || *end || errno || port < 0 || port > 65535)
        return fed_errorf(FED_EINVAL, "%s: port \"%s\" is outside 0..65535", addr, colon + 1);
    if (strcmp(host, "localhost") == 0) snprintf(host, sizeof host, "127.0.0.1");
    if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
        return fed_errorf(FED_EINVAL, "%s: \"%s\" is not an IPv4 address or localhost", addr, host);
    sin->sin_port = htons((uint16_t)port);
    return FED_OK;
}

static bool loopback(const struct sockaddr_in *sin) {
    return (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
}

fed_err fed_http_check_addr(const char *addr, bool tls) {
    struct sockaddr_in sin;
    fed_err err = parse_addr(addr, &sin);
    if (err) return err;
    if (!tls && !loopback(&sin))
        return fed_errorf(FED_EINVAL,
                          "%s: not a loopback address: serving it needs TLS with admin "
                          "client certificates (--http-tls)",
                          addr);
    return FED_OK;
}

static fed_err read_pem(const char *path, const char *what, char **out) {
    *out = NULL;
    if (!path) return fed_errorf(FED_EINVAL, "HTTPS needs the %s file", what);
    FILE *f = fopen(path, "rb");
    if (!f) return fed_errorf(FED_EIO, "%s %s: %s", what, path, strerror(errno));
    char *buf = fed_malloc(PEM_MAX + 1);
    size_t n = buf ? fread(buf, 1, PEM_MAX + 1, f) : 0;
    bool bad = ferror(f) != 0;
    fclose(f);
    if (!buf) return FED_ENOMEM;
    if (bad || n == 0 || n > PEM_MAX) {
        fed_free(buf);
        return fed_errorf(FED_EIO, "%s %s: %s", what, path,
                          bad ? "read error"
                          : n ? "larger than 1 MB"
                              : "empty");
    }
    buf[n] = '\0';
    *out = buf;
    return FED_OK;
}

static void peer_name(struct MHD_Connection *conn, char *buf, size_t size) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    snprintf(buf, size, "?");
    if (!ci || !ci->client_addr || ci->client_addr->sa_family != AF_INET) return;
    const struct sockaddr_in *s = (const struct sockaddr_in *)(const void *)ci->client_addr;
    char ip[INET_ADDRSTRLEN];
    if (inet_ntop(AF_INET, &s->sin_addr, ip, sizeof ip))
        snprintf(buf, size, "%s:%u", ip, (unsigned)ntohs(s->sin_port));
}

/* tls: the peer's chain checked for the admin role; cn its CN. */
static fed_err check_admin(fed_http *h, struct MHD_Connection *conn, char *cn, size_t cn_size) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    if (!ci || !ci->tls_session) return fed_errorf(FED_EAUTH, "no TLS session");
    unsigned int n = 0;
    const gnutls_datum_t *peers =
        gnutls_certificate_get_peers((gnutls_session_t)ci->tls_session, &n);
    if (!peers) n = 0;
    if (n > CHAIN_MAX) n = CHAIN_MAX;
    const uint8_t *der[CHAIN_MAX];
    size_t len[CHAIN_MAX];
    for (unsigned i = 0; i < n; i++) {
        der[i] = peers[i].data;
        len[i] = peers[i].size;
    }
    return fed_net_verify_admin_der(der, len, n, h->cfg.ca_file, h->cfg.crl_file, cn, cn_size);
}

static enum MHD_Result answer(struct MHD_Connection *conn, unsigned status, const char *type,
                              char *body, size_t len, bool head) {
    struct MHD_Response *r = head ? MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT)
                                  : MHD_create_response_from_buffer(len, body ? body : (char *)"",
                                                                    body ? MHD_RESPMEM_MUST_FREE
                                                                         : MHD_RESPMEM_PERSISTENT);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    if (head) free(body);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "Content-Security-Policy",
                            "default-src 'none'; style-src 'unsafe-inline'; img-src data:");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

/* The request's URL (or method) for a log line: at most 80 bytes then "...", and every
 * byte outside printable ASCII as '?' (libmicrohttpd has already decoded "%0A" into a
 * line break, which must not start a forged log line). */
static void loggable(const char *in, char *out, size_t size) {
    size_t n = 0;
    for (; in[n] && n < 80 && n + 1 < size; n++)
        out[n] = in[n] >= 0x20 && in[n] < 0x7f ? in[n] : '?';
    out[n] = '\0';
    if (in[n] && n + 4 < size) memcpy(out + n, "...", 4);
}

/* A refusal: one warn line with the peer and the reason, and a short text body. */
static enum MHD_Result refuse(struct MHD_Connection *conn, unsigned status, const char *peer,
                              const char *who, const char *method, const char *url,
                              const char *why) {
    char m[96], u[96];
    loggable(method, m, sizeof m);
    loggable(url, u, sizeof u);
    FED_LOG(FED_LOG_WARN, "http: %s%s %s %s refused (%u): %s", peer, who, m, u, status, why);
    char *body = fed_malloc(strlen(why) + 2);
    if (body) snprintf(body, strlen(why) + 2, "%s\n", why);
    return answer(conn, status, "text/plain; charset=utf-8", body, body ? strlen(body) : 0,
                  strcmp(method, "HEAD") == 0);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls) {
    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)con_cls;
    fed_http *h = cls;
    char peer[64], cn[256] = "", who[300] = "";
    peer_name(conn, peer, sizeof peer);
    if (h->cfg.tls) {
        fed_err err = check_admin(h, conn, cn, sizeof cn);
        if (err) {
            char why[512];
            snprintf(why, sizeof why, "%s", fed_errmsg());
            fed_errclear();
            return refuse(conn, MHD_HTTP_FORBIDDEN, peer, "", method, url, why);
        }
        snprintf(who, sizeof who, " (admin %s)", cn);
    }
    bool head = strcmp(method, "HEAD") == 0;
    if (!head && strcmp(method, "GET") != 0)
        return refuse(conn, MHD_HTTP_METHOD_NOT_ALLOWED, peer, who, method, url,
                      "method not allowed: GET or HEAD only");
    if (strlen(url) > URL_MAX)
        return refuse(conn, MHD_HTTP_URI_TOO_LONG, peer, who, method, url, "URL too long");
    const char *const *p = h->cfg.paths;
    while (*p && strcmp(*p, url) != 0) p++;
    if (!*p) return refuse(conn, MHD_HTTP_NOT_FOUND, peer, who, method, url, "no such page");
    fed_http_reply r = {200, "text/plain; charset=utf-8", NULL, 0};
    h->cfg.route(h->cfg.user, *p, &r);
    /* url is one of the fixed paths here, method GET or HEAD: both printable. */
    if (h->cfg.tls)
        FED_LOG(FED_LOG_INFO, "http: %s%s %s %s: %d", peer, who, method, url, r.status);
    else
        FED_LOG(FED_LOG_DEBUG, "http: %s %s %s: %d", peer, method, url, r.status);
    return answer(conn, (unsigned)r.status, r.type, r.body, r.len, head);
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    if (!fed_log_enabled(FED_LOG_DEBUG)) return;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = '\0';
    FED_LOG(FED_LOG_DEBUG, "http: %s", line);
}

void fed_http_stop(fed_http **ph) {
    if (!ph || !*ph) return;
    fed_http *h = *ph;
    if (h->d) MHD_stop_daemon(h->d);
    fed_free(h->cert_pem);
    fed_free(h->key_pem);
    fed_free(h->ca_pem);
    fed_free(h);
    *ph = NULL;
}

fed_err fed_http_start(fed_http **out, const fed_http_config *cfg) {
    *out = NULL;
    struct sockaddr_in sin;
    fed_err err = fed_http_check_addr(cfg->addr, cfg->tls);
    if (!err) err = parse_addr(cfg->addr, &sin);
    if (err) return err;
    fed_http *h = fed_calloc(1, sizeof *h);
    if (!h) return FED_ENOMEM;
    h->cfg = *cfg;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG;
    if (cfg->tls) {
        if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
            err = fed_errorf(FED_EUNSUPPORTED, "this libmicrohttpd has no TLS");
            goto fail;
        }
        if ((err = read_pem(cfg->cert_file, "certificate", &h->cert_pem)) ||
            (err = read_pem(cfg->key_file, "key", &h->key_pem)) ||
            (err = read_pem(cfg->ca_file, "CA", &h->ca_pem)))
            goto fail;
        flags |= MHD_USE_TLS;
    }
    unsigned conns = cfg->max_connections ? cfg->max_connections : 16;
    unsigned timeout = cfg->timeout_s ? cfg->timeout_s : 10;
    if (cfg->tls)
        h->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, h, MHD_OPTION_SOCK_ADDR, &sin,
                                MHD_OPTION_CONNECTION_LIMIT, conns, MHD_OPTION_CONNECTION_TIMEOUT,
                                timeout, MHD_OPTION_PER_IP_CONNECTION_LIMIT, conns,
                                MHD_OPTION_EXTERNAL_LOGGER, mhd_log, h, MHD_OPTION_HTTPS_MEM_CERT,
                                h->cert_pem, MHD_OPTION_HTTPS_MEM_KEY, h->key_pem,
                                MHD_OPTION_HTTPS_MEM_TRUST, h->ca_pem, MHD_OPTION_END);
    else
        h->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, h, MHD_OPTION_SOCK_ADDR, &sin,
                                MHD_OPTION_CONNECTION_LIMIT, conns, MHD_OPTION_CONNECTION_TIMEOUT,
                                timeout, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, h, MHD_OPTION_END);
    if (!h->d) {
        err = fed_errorf(FED_EIO,
                         "%s: cannot serve HTTP%s there (address in use or not "
                         "this host's, or the certificate or key was refused)",
                         cfg->addr, cfg->tls ? "S" : "");
        goto fail;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    char ip[INET_ADDRSTRLEN] = "?";
    inet_ntop(AF_INET, &sin.sin_addr, ip, sizeof ip);
    snprintf(h->addr, sizeof h->addr, "%s:%u", ip,
             di ? (unsigned)di->port : (unsigned)ntohs(sin.sin_port));
    *out = h;
    return FED_OK;
fail:
    fed_http_stop(&h);
    return err;
}

const char *fed_http_address(const fed_http *h) {
    return h->addr;
}
