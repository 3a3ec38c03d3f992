/* The parts of channel.h that belong to neither side: default configurations, the
 * endpoint check, event names and the ZeroMQ context helpers. The coordinator is
 * server.c, a client client.c, what they share session.c; the TLS file checks live in
 * tls.c, beside the rest of OpenSSL. */
#include "net/channel.h"

#include "net/sock.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

fed_net_config fed_net_default_config(void) {
    fed_net_config c = {0};
    c.handshake_timeout_ms = 10000;
    c.keepalive_ms = 10000;
    c.idle_timeout_ms = 60000;
    c.zmq_heartbeat_ms = 5000;
    c.chunk_size = FED_NET_CHUNK_DEFAULT;
    c.credits = 8;
    c.pool_bytes = (size_t)32 << 20;
    c.limits = fed_msg_default_limits();
    return c;
}

fed_server_config fed_server_default_config(void) {
    fed_server_config c = {0};
    c.net = fed_net_default_config();
    c.software = "fedtune";
    c.max_peers = 1024;
    c.max_handshakes = 64;
    return c;
}

fed_client_config fed_client_default_config(void) {
    fed_client_config c = {0};
    c.net = fed_net_default_config();
    c.hello.software = "fedtune";
    return c;
}

/* ------------------------------------------------------------------------------------ */
/* Endpoints                                                                            */

/* True when h[0..n) may name a host: letters, digits, '-', '.', '_' (interface names),
 * starting with a letter or digit; dotted digits only if they make an IPv4 address. */
static bool host_ok(const char *h, size_t n, const char **why) {
    char buf[256];
    if (n >= sizeof buf) {
        *why = "host name longer than 255 characters";
        return false;
    }
    memcpy(buf, h, n);
    buf[n] = '\0';
    bool digits = true;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)buf[i];
        if (!isalnum(ch) && ch != '-' && ch != '.' && ch != '_') {
            *why = ch == ':' ? "a colon in the host (an IPv6 address goes in brackets: "
                               "tcp://[::1]:PORT)"
                             : "the host may hold only letters, digits, '-', '.' and '_'";
            return false;
        }
        if (!isdigit(ch) && ch != '.') digits = false;
    }
    if (!isalnum((unsigned char)buf[0])) {
        *why = "the host must start with a letter or a digit";
        return false;
    }
    unsigned char ip[16];
    if (digits && inet_pton(AF_INET, buf, ip) != 1) {
        *why = "the host is not a valid IPv4 address";
        return false;
    }
    return true;
}

fed_err fed_net_check_endpoint(const char *ep, bool bind) {
    if (!ep || !ep[0])
        return fed_errorf(FED_EINVAL, "no endpoint: expected tcp://HOST:PORT or inproc://NAME");
    if (strncmp(ep, "inproc://", 9) == 0) {
        const char *name = ep + 9;
        size_t n = strlen(name);
        if (n == 0 || n > 255)
            return fed_errorf(FED_EINVAL, "%s: inproc:// needs a name of 1..255 characters", ep);
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)name[i] <= 0x20 || (unsigned char)name[i] >= 0x7f)
                return fed_errorf(FED_EINVAL,
                                  "%s: the inproc:// name may hold printable characters only", ep);
        return FED_OK;
    }
    const char *sep = strstr(ep, "://");
    if (!sep) {
        const char *colon = strrchr(ep, ':');
        if (colon && colon > ep && colon[1])
            return fed_errorf(FED_EINVAL, "%s: no transport: write tcp://%s", ep, ep);
        return fed_errorf(FED_EINVAL, "%s: not an endpoint: expected tcp://HOST:PORT%s", ep,
                          bind ? " (or tcp://*:PORT)" : "");
    }
    if (strncmp(ep, "tcp://", 6) != 0)
        return fed_errorf(FED_EINVAL,
                          "%s: transport \"%.*s\" not supported: tcp://HOST:PORT or inproc://NAME",
                          ep, (int)(sep - ep), ep);
    const char *host = ep + 6, *port;
    size_t hlen;
    const char *why = NULL;
    if (host[0] == '[') {
        const char *close = strchr(host, ']');
        if (!close) return fed_errorf(FED_EINVAL, "%s: no ']' after the IPv6 address", ep);
        char v6[64];
        hlen = (size_t)(close - host - 1);
        if (hlen == 0 || hlen >= sizeof v6)
            return fed_errorf(FED_EINVAL, "%s: not an IPv6 address in brackets", ep);
        memcpy(v6, host + 1, hlen);
        v6[hlen] = '\0';
        unsigned char ip[16];
        if (inet_pton(AF_INET6, v6, ip) != 1)
            return fed_errorf(FED_EINVAL, "%s: \"%s\" is not an IPv6 address", ep, v6);
        if (close[1] != ':') return fed_errorf(FED_EINVAL, "%s: no port: tcp://HOST:PORT", ep);
        port = close + 2;
    } else {
        const char *colon = strrchr(host, ':');
        if (!colon) return fed_errorf(FED_EINVAL, "%s: no port: tcp://HOST:PORT", ep);
        hlen = (size_t)(colon - host);
        port = colon + 1;
        if (hlen == 0) return fed_errorf(FED_EINVAL, "%s: no host: tcp://HOST:PORT", ep);
        if (hlen == 1 && host[0] == '*') {
            if (!bind)
                return fed_errorf(FED_EINVAL,
                                  "%s: \"*\" (every interface) is for listening, not for "
                                  "connecting: name the coordinator's host",
                                  ep);
        } else if (!host_ok(host, hlen, &why)) {
            return fed_errorf(FED_EINVAL, "%s: %s", ep, why);
        }
    }
    if (!port[0]) return fed_errorf(FED_EINVAL, "%s: no port: tcp://HOST:PORT", ep);
    if (strcmp(port, "*") == 0) {
        if (bind) return FED_OK;
        return fed_errorf(FED_EINVAL, "%s: port \"*\" is for listening: give the port number", ep);
    }
    size_t plen = strlen(port);
    bool num = plen <= 9;
    for (size_t i = 0; num && i < plen; i++) num = isdigit((unsigned char)port[i]) != 0;
    if (!num)
        return fed_errorf(FED_EINVAL, "%s: port \"%s\" is not a number in %s", ep, port,
                          bind ? "0..65535" : "1..65535");
    long p = strtol(port, NULL, 10);
    if (p > 65535 || (p == 0 && !bind))
        return fed_errorf(FED_EINVAL, "%s: port %ld is outside %s", ep, p,
                          bind ? "0..65535 (0: a free port)" : "1..65535");
    return FED_OK;
}

/* ------------------------------------------------------------------------------------ */
/* Events and contexts                                                                  */

const char *fed_net_event_name(fed_net_event_type t) {
    switch (t) {
    case FED_NET_NONE:
        return "none";
    case FED_NET_JOINED:
        return "joined";
    case FED_NET_MESSAGE:
        return "message";
    case FED_NET_TRANSFER_DONE:
        return "transfer done";
    case FED_NET_TRANSFER_SENT:
        return "transfer sent";
    case FED_NET_TRANSFER_FAILED:
        return "transfer failed";
    case FED_NET_LEFT:
        return "left";
    }
    return "none";
}

void *fed_net_context_new(void) {
    void *ctx = fed__zmq_ctx_new();
    if (!ctx) fed_errorf(FED_ENOMEM, "cannot create a ZeroMQ context");
    return ctx;
}

fed_err fed_net_context_set_max_sockets(void *ctx, size_t n) {
    if (n > 1000000) return fed_errorf(FED_EINVAL, "max sockets %zu: at most 1000000", n);
    if (n < 1024) n = 1024;
    if (fed__zmq_ctx_max_sockets(ctx, (int)n) != 0)
        return fed_errorf(FED_EINVAL, "cannot allow %zu ZeroMQ sockets in one context", n);
    return FED_OK;
}

void fed_net_context_destroy(void **ctx) {
    if (!ctx || !*ctx) return;
    fed__zmq_ctx_term(*ctx);
    *ctx = NULL;
}
