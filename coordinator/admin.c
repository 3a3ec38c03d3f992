/* Administration without restart (docs/ADMIN.md): what an admin's session may ask the
 * running coordinator (AdminRequest), and what an admin's session may not do. The
 * channel says a session's role from its verified certificate (fed_net_event.role); an
 * admin is never registered as a site (never sampled, never counted in min_clients), a
 * site may not send AdminRequest, and an evicted site's sessions are closed as they are
 * admitted until it is readmitted. Every request is answered with one AdminReply and
 * logged at info with the admin's CN, the action, the target and the outcome. */
#include "coordinator/internal.h"

static bool is_evicted(const fed_coord *c, const char *cn, size_t *at) {
    for (size_t i = 0; i < c->admin.nevicted; i++)
        if (strcmp(c->admin.evicted[i], cn) == 0) {
            if (at) *at = i;
            return true;
        }
    return false;
}

bool fed__coord_is_evicted(const fed_coord *c, const char *cn) {
    return is_evicted(c, cn, NULL);
}

static fed_err add_evicted(fed_coord *c, const char *cn) {
    if (c->admin.nevicted == c->admin.capevicted) {
        size_t cap = c->admin.capevicted ? 2 * c->admin.capevicted : 8;
        char(*p)[FED_NET_CN_MAX + 1] = fed_realloc(c->admin.evicted, cap * sizeof *p);
        if (!p) return FED_ENOMEM;
        c->admin.evicted = p;
        c->admin.capevicted = cap;
    }
    snprintf(c->admin.evicted[c->admin.nevicted++], FED_NET_CN_MAX + 1, "%s", cn);
    return FED_OK;
}

/* Sends the reply and logs the action: "admin ops: evict site-2: ok: ...". */
static void reply(fed_coord *c, const fed_net_event *ev, const fed_msg_admin_request *r,
                  uint32_t code, const char *text, const char *log_text) {
    fed_msg m = {.type = FED_MSG_ADMIN_REPLY};
    m.u.admin_reply.ok = code == FED_WIRE_NONE;
    m.u.admin_reply.code = code;
    m.u.admin_reply.text = text;
    const char *site = r->site && r->site[0] ? r->site : "";
    FED_LOG(FED_LOG_INFO, "admin %s: %s%s%s: %s: %s", ev->cn, fed_admin_action_name(r->action),
            site[0] ? " " : "", site, code == FED_WIRE_NONE ? "ok" : "refused",
            log_text ? log_text : text);
    fed_err e = fed_server_send(c->srv, ev->peer, &m);
    if (e == FED_EINVAL) { /* the text is more than a message carries: say so instead */
        char why[256];
        snprintf(why, sizeof why, "%s: the reply does not fit in a message (%s)",
                 fed_admin_action_name(r->action), fed_server_errmsg(c->srv));
        fed_errclear();
        m.u.admin_reply.ok = false;
        m.u.admin_reply.code = FED_WIRE_RANGE;
        m.u.admin_reply.text = why;
        e = fed_server_send(c->srv, ev->peer, &m);
    }
    if (e != FED_OK) {
        FED_LOG(FED_LOG_WARN, "admin %s: the reply was not sent: %s", ev->cn,
                fed_server_errmsg(c->srv));
        fed_errclear();
    }
}

static void do_evict(fed_coord *c, const fed_net_event *ev, const fed_msg_admin_request *r) {
    char text[256];
    client *k = fed__coord_find(c, r->site);
    if (is_evicted(c, r->site, NULL)) {
        snprintf(text, sizeof text, "site %s is already evicted", r->site);
        reply(c, ev, r, FED_WIRE_NONE, text, NULL);
        return;
    }
    if (!k) {
        snprintf(text, sizeof text, "unknown site \"%s\": no site of that name has joined",
                 r->site);
        reply(c, ev, r, FED_WIRE_INVALID, text, NULL);
        return;
    }
    if (add_evicted(c, r->site) != FED_OK) {
        fed_errclear();
        reply(c, ev, r, FED_WIRE_BUSY, "out of memory", NULL);
        return;
    }
    bool was = k->connected;
    if (was) {
        char why[128];
        snprintf(why, sizeof why, "evicted by admin %s", ev->cn);
        if (fed_server_drop(c->srv, k->peer, why) != FED_OK) fed_errclear();
    }
    fed__coord_status_site(c, k, false);
    snprintf(text, sizeof text, "evicted %s: %s; its rejoin is refused until readmit", r->site,
             was ? "its session is closed" : "it was not connected");
    reply(c, ev, r, FED_WIRE_NONE, text, NULL);
}

static void do_readmit(fed_coord *c, const fed_net_event *ev, const fed_msg_admin_request *r) {
    char text[256];
    size_t at;
    if (!is_evicted(c, r->site, &at)) {
        snprintf(text, sizeof text, "site %s is not evicted", r->site);
        reply(c, ev, r, FED_WIRE_INVALID, text, NULL);
        return;
    }
    memmove(c->admin.evicted[at], c->admin.evicted[at + 1],
            (c->admin.nevicted - at - 1) * sizeof c->admin.evicted[0]);
    c->admin.nevicted--;
    client *k = fed__coord_find(c, r->site);
    if (k) fed__coord_status_site(c, k, false);
    snprintf(text, sizeof text, "readmitted %s: it may join again", r->site);
    reply(c, ev, r, FED_WIRE_NONE, text, NULL);
}

static void do_reload_crl(fed_coord *c, const fed_net_event *ev, const fed_msg_admin_request *r) {
    char text[640];
    size_t closed = 0;
    if (fed_server_reload_crl(c->srv, &closed) != FED_OK) {
        snprintf(text, sizeof text, "%s; the CRL in force stays", fed_server_errmsg(c->srv));
        fed_errclear();
        reply(c, ev, r, FED_WIRE_INVALID, text, NULL);
        return;
    }
    snprintf(text, sizeof text, "reloaded %s: %zu session%s of revoked certificates closed",
             c->cfg.server.net.tls.crl_file, closed, closed == 1 ? "" : "s");
    reply(c, ev, r, FED_WIRE_NONE, text, NULL);
}

static void on_request(fed_coord *c, const fed_net_event *ev, const fed_msg_admin_request *r) {
    char text[160];
    switch (r->action) {
    case FED_ADMIN_STATUS: {
        char *json = NULL;
        if (fed_coord_status_json(c, &json) != FED_OK) {
            snprintf(text, sizeof text, "status: %s", fed_errmsg());
            fed_errclear();
            reply(c, ev, r, FED_WIRE_BUSY, text, NULL);
            return;
        }
        snprintf(text, sizeof text, "%zu bytes of status JSON", strlen(json));
        reply(c, ev, r, FED_WIRE_NONE, json, text);
        fed_free(json);
        return;
    }
    case FED_ADMIN_PAUSE:
        snprintf(text, sizeof text, "%s: no new round starts%s",
                 c->admin.paused ? "already paused" : "paused",
                 c->state == FED_COORD_WAITING || c->state == FED_COORD_LINGERING
                     ? ""
                     : "; the round in flight finishes");
        c->admin.paused = true;
        reply(c, ev, r, FED_WIRE_NONE, text, NULL);
        return;
    case FED_ADMIN_RESUME:
        snprintf(text, sizeof text, "%s",
                 c->admin.paused ? "resumed" : "not paused: nothing to do");
        c->admin.paused = false;
        reply(c, ev, r, FED_WIRE_NONE, text, NULL);
        return;
    case FED_ADMIN_STOP:
        reply(c, ev, r, FED_WIRE_NONE, "stopping (as on SIGTERM)", NULL);
        fed_coord_request_stop(c);
        return;
    case FED_ADMIN_RELOAD_CRL:
        do_reload_crl(c, ev, r);
        return;
    case FED_ADMIN_EVICT:
        do_evict(c, ev, r);
        return;
    case FED_ADMIN_READMIT:
        do_readmit(c, ev, r);
        return;
    case FED_ADMIN_NONE:
        break;
    }
    reply(c, ev, r, FED_WIRE_INVALID, "no such action", NULL);
}

/* An admin certificate acting as a site: Error, then its session closes. */
static void refuse_site(fed_coord *c, const fed_net_event *ev, const char *what) {
    FED_LOG(FED_LOG_WARN,
            "admin %s refused as a site (%s): an admin certificate cannot take part as a site",
            ev->cn, what);
    fed_msg e = {.type = FED_MSG_ERROR};
    e.u.error.code = FED_WIRE_AUTH;
    e.u.error.text = "an admin certificate cannot take part as a site";
    if (fed_server_send(c->srv, ev->peer, &e) != FED_OK) fed_errclear();
    if (fed_server_drop(c->srv, ev->peer, "an admin certificate, not a site's") != FED_OK)
        fed_errclear();
}

/* An admin's session: requests only; anything a site would send closes it. */
static void admin_event(fed_coord *c, const fed_net_event *ev) {
    switch (ev->type) {
    case FED_NET_JOINED: {
        const fed_msg_hello *h = ev->msg ? &ev->msg->u.hello : NULL;
        if (h && (h->train_examples || h->num_capabilities)) {
            refuse_site(c, ev, "its Hello is a site's");
            return;
        }
        FED_LOG(FED_LOG_INFO, "admin %s connected", ev->cn);
        return;
    }
    case FED_NET_LEFT:
        FED_LOG(FED_LOG_INFO, "admin %s left (%s)", ev->cn, ev->reason);
        return;
    case FED_NET_MESSAGE:
        if (ev->msg->type == FED_MSG_ADMIN_REQUEST) {
            on_request(c, ev, &ev->msg->u.admin_request);
            return;
        }
        if (ev->msg->type == FED_MSG_BYE) return;
        char what[64];
        snprintf(what, sizeof what, "it sent %s", fed_msg_type_name(ev->msg->type));
        refuse_site(c, ev, what);
        return;
    default:
        return; /* transfers: an admin has none */
    }
}

bool fed__coord_admin_event(fed_coord *c, const fed_net_event *ev) {
    if (ev->type == FED_NET_NONE) return false;
    if (ev->role == FED_NET_ROLE_ADMIN) {
        admin_event(c, ev);
        return true;
    }
    if (ev->type == FED_NET_JOINED && is_evicted(c, ev->cn, NULL)) {
        FED_LOG(FED_LOG_WARN, "%s refused: evicted by an admin (readmit it to let it join)",
                ev->cn);
        fed_msg e = {.type = FED_MSG_ERROR};
        e.u.error.code = FED_WIRE_AUTH;
        e.u.error.text = "evicted by the federation's admin";
        if (fed_server_send(c->srv, ev->peer, &e) != FED_OK) fed_errclear();
        if (fed_server_drop(c->srv, ev->peer, "evicted") != FED_OK) fed_errclear();
        return true;
    }
    if (ev->type == FED_NET_MESSAGE && ev->msg->type == FED_MSG_ADMIN_REQUEST) {
        const fed_msg_admin_request *r = &ev->msg->u.admin_request;
        char text[160];
        snprintf(text, sizeof text, "refused: %s holds a site certificate, not an admin's", ev->cn);
        FED_LOG(FED_LOG_WARN, "site %s sent an admin request (%s): refused", ev->cn,
                fed_admin_action_name(r->action));
        fed_msg m = {.type = FED_MSG_ADMIN_REPLY};
        m.u.admin_reply.code = FED_WIRE_AUTH;
        m.u.admin_reply.text = text;
        if (fed_server_send(c->srv, ev->peer, &m) != FED_OK) fed_errclear();
        return true;
    }
    return false;
}
