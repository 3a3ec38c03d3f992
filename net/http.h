/* A small HTTP server for monitoring (libmicrohttpd, its own polling thread): GET and
 * HEAD of a fixed set of paths, each answered by the owner's route function on that
 * thread; 404 for another path, 405 for another method, 414 for a long URL; a limit on
 * connections and an idle timeout. By default it binds a loopback address and serves
 * plain HTTP. Any other address needs tls: HTTPS (GnuTLS, through libmicrohttpd) with the
 * coordinator's certificate and key, where every request must come with a client
 * certificate of the administrator role (net/admin.h), checked against the federation's
 * CA and CRL; refused requests get 403. Every refused request is logged (warn) with the
 * peer's address and the reason, an admin's requests (info) with the admin's CN.
 * What is not here: what the routes say (coordinator/status.c renders it). */
#ifndef FED_NET_HTTP_H
#define FED_NET_HTTP_H

#include "core/err.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct fed_http fed_http;

/* A route's answer: status 200 (or another), content type (static text), body (taken:
 * malloc'd, freed by the server; NULL with len 0 is an empty body). */
typedef struct fed_http_reply {
    int status;
    const char *type;
    char *body;
    size_t len;
} fed_http_reply;

/* Called on the server's thread for a GET or HEAD of one of the paths. */
typedef void (*fed_http_route_fn)(void *user, const char *path, fed_http_reply *r);

typedef struct fed_http_config {
    const char *addr;         /* "HOST:PORT": HOST an IPv4 address or localhost; PORT
                                 1..65535, or 0 for a free one (fed_http_address) */
    bool tls;                 /* HTTPS, admin client certificates required */
    const char *cert_file;    /* tls: the server's certificate (PEM) */
    const char *key_file;     /* tls: its private key (PEM) */
    const char *ca_file;      /* tls: the federation's CA (PEM) */
    const char *crl_file;     /* tls: its CRL (PEM) or NULL */
    const char *const *paths; /* the routes, NULL-terminated ("/metrics", ...) */
    fed_http_route_fn route;
    void *user;
    unsigned max_connections; /* at once (0: 16) */
    unsigned timeout_s;       /* an idle connection is closed after this (0: 10) */
} fed_http_config;

/* Checks addr ("HOST:PORT") and that a non-loopback HOST comes with tls: FED_EINVAL
 * naming what is wrong. */
fed_err fed_http_check_addr(const char *addr, bool tls) FED_MUST_USE;
/* Binds and starts the server thread. FED_EINVAL for the address, FED_EIO for the files,
 * FED_EIO when the address cannot be bound. */
fed_err fed_http_start(fed_http **out, const fed_http_config *cfg) FED_MUST_USE;
/* "127.0.0.1:9464": the address really bound. */
const char *fed_http_address(const fed_http *h);
/* Stops the thread (requests in progress finish) and frees h. NULL-safe; *h = NULL. */
void fed_http_stop(fed_http **h);

#endif
