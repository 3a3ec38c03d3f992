/* The parts of channel.h that belong to neither side: default configurations, event
 * names and the ZeroMQ context helpers. The coordinator is server.c, a client client.c,
 * what they share session.c. */
#include "net/channel.h"

#include "net/sock.h"

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
