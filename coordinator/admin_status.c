/* replaced by coordinator/status.c at merge */
/* A minimal fed_coord_status_json for `fedtune admin status` until h-http's
 * coordinator/status.c lands: the keys that one promises, no more. */
#include "coordinator/internal.h"

/* Appends s as a JSON string (CNs are printable ASCII: only " and \ need escaping). */
static void put_str(char *out, size_t *at, const char *s) {
    out[(*at)++] = '"';
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') out[(*at)++] = '\\';
        out[(*at)++] = *s;
    }
    out[(*at)++] = '"';
}

fed_err fed_coord_status_json(fed_coord *c, char **out) {
    *out = NULL;
    size_t cap = 256 + c->ncl * (2 * FED_NET_CN_MAX + 128), at = 0;
    char *j = fed_malloc(cap);
    if (!j) return FED_ENOMEM;
    at += (size_t)snprintf(j + at, cap - at,
                           "{\"state\":\"%s\",\"paused\":%s,\"rounds_done\":%" PRIu64
                           ",\"model_version\":%" PRIu64 ",\"sites\":[",
                           fed_coord_state_name(c->state), c->admin.paused ? "true" : "false",
                           c->rounds_done, c->version);
    for (size_t i = 0; i < c->ncl; i++) {
        const client *k = &c->cl[i];
        bool evicted = false;
        for (size_t e = 0; e < c->admin.nevicted; e++)
            evicted = evicted || strcmp(c->admin.evicted[e], k->cn) == 0;
        at += (size_t)snprintf(j + at, cap - at, "%s{\"name\":", i ? "," : "");
        put_str(j, &at, k->cn);
        at += (size_t)snprintf(j + at, cap - at,
                               ",\"state\":\"%s\",\"last_seen\":0,\"rounds\":0,\"rejections\":0}",
                               evicted        ? "evicted"
                               : k->connected ? "connected"
                                              : "disconnected");
    }
    snprintf(j + at, cap - at, "]}");
    *out = j;
    return FED_OK;
}
