/* The admin role in the channel (docs/ADMIN.md) over real TLS on tcp://127.0.0.1, with
 * certificates from certs/fedtune-certs: the role a certificate file gives its holder
 * (fed_net_cert_role), the role of each admitted session (fed_net_event.role,
 * fed_server_peer_role), and fed_server_reload_crl: a newly revoked site's session ends at
 * once and its reconnect is refused, while a bad CRL file is refused and the CRL in
 * force stays. */
#include "tests/test_net_common.h"

#include <stdio.h>

static fed_net_role roles[64]; /* the coordinator's JOINED events: role by peer handle */

static void note_role(world *w, const fed_net_event *ev) {
    (void)w;
    if (ev->type == FED_NET_JOINED && ev->peer < 64) roles[ev->peer] = ev->role;
}

static fed_client_config admin_config(const char *endpoint, const char *name) {
    static char paths[2][320];
    fed_client_config c = client_config(endpoint, "ca", "site-1");
    snprintf(paths[0], sizeof paths[0], "%s/ca/admins/%s/%s.crt", certdir, name, name);
    snprintf(paths[1], sizeof paths[1], "%s/ca/admins/%s/%s.key", certdir, name, name);
    c.net.tls.cert_file = paths[0];
    c.net.tls.key_file = paths[1];
    c.hello.train_examples = 0;
    return c;
}

TEST(cert_role) {
    CHECK_STR(fed_net_role_name(FED_NET_ROLE_SITE), "site");
    CHECK_STR(fed_net_role_name(FED_NET_ROLE_ADMIN), "admin");
    fed_net_role r = FED_NET_ROLE_ADMIN;
    CHECK_OK(fed_net_cert_role(cpath("ca/sites/site-1/site-1.crt"), &r));
    CHECK_INT(r, FED_NET_ROLE_SITE);
    CHECK_OK(fed_net_cert_role(cpath("ca/admins/ops/ops.crt"), &r));
    CHECK_INT(r, FED_NET_ROLE_ADMIN);
    CHECK_OK(fed_net_cert_role(cpath("ca/coordinator/localhost.crt"), &r));
    CHECK_INT(r, FED_NET_ROLE_SITE);
    CHECK_ERR(fed_net_cert_role(cpath("ca/crl.pem"), &r), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "crl.pem: not a PEM certificate");
    CHECK_INT(r, FED_NET_ROLE_SITE);
    CHECK(fed_net_cert_role(cpath("nothing.crt"), &r) != FED_OK);
    CHECK_CONTAINS(fed_errmsg(), "nothing.crt");
    /* An admin certificate is a client certificate: the client-side checks pass. */
    fed_net_tls t = {cpath("ca/ca.crt"), cpath("ca/admins/ops/ops.crt"),
                     cpath("ca/admins/ops/ops.key"), NULL};
    CHECK_OK(fed_net_check_tls(&t, false, NULL));
    /* ... and never the coordinator's. */
    CHECK_ERR(fed_net_check_tls(&t, true, NULL), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "ops.crt: an admin's certificate (fedtune-certs admin), not the "
                                 "coordinator's");
}

static bool two_joined(world *w) {
    return w->s.joined >= 2 && w->c[0].joined >= 1 && w->c[1].joined >= 1;
}

TEST(role_in_events) {
    world w = {0};
    memset(roles, 0xff, sizeof roles);
    w.zctx = fed_net_context_new();
    w.on_srv = note_role;
    fed_server_config sc = server_config("tcp://127.0.0.1:0");
    CHECK_OK(fed_server_new(&w.srv, w.zctx, &sc));
    if (!w.srv) goto done;
    const char *ep = fed_server_endpoint(w.srv);
    fed_client_config c0 = client_config(ep, "ca", "site-1");
    fed_client_config c1 = admin_config(ep, "ops");
    CHECK_OK(fed_client_new(&w.cli[0], w.zctx, &c0));
    CHECK_OK(fed_client_new(&w.cli[1], w.zctx, &c1));
    w.ncli = 2;
    CHECK(world_until(&w, two_joined, 15000));
    int site = 0, admin = 0;
    for (uint32_t p = 1; p <= 2; p++) {
        const char *cn = fed_server_peer_cn(w.srv, p);
        if (!cn) continue;
        fed_net_role want = strcmp(cn, "ops") == 0 ? FED_NET_ROLE_ADMIN : FED_NET_ROLE_SITE;
        CHECK_INT(roles[p], want);
        CHECK_INT(fed_server_peer_role(w.srv, p), want);
        admin += want == FED_NET_ROLE_ADMIN;
        site += want == FED_NET_ROLE_SITE;
    }
    CHECK_INT(site, 1);
    CHECK_INT(admin, 1);
    CHECK_INT(fed_server_peer_role(w.srv, 99), FED_NET_ROLE_SITE);
    /* A reply that would not encode: refused with the field named, the session kept. */
    fed_msg bad = {.type = FED_MSG_ADMIN_REPLY};
    bad.u.admin_reply.ok = true;
    bad.u.admin_reply.code = FED_WIRE_AUTH;
    CHECK_ERR(fed_server_send(w.srv, 1, &bad), FED_EINVAL);
    CHECK_CONTAINS(fed_server_errmsg(w.srv), "admin_reply.code: 13 with ok true");
    CHECK(fed_server_peer_connected(w.srv, 1));
    fed_msg req = {.type = FED_MSG_ADMIN_REQUEST};
    CHECK_ERR(fed_client_send(w.cli[1], &req), FED_EINVAL);
    CHECK_CONTAINS(fed_client_errmsg(w.cli[1]), "admin_request.action: none");
    /* The client side sees the coordinator as a site would: no admin role there. */
    CHECK_STR(w.c[1].cn, "localhost");
done:
    world_free(&w);
}

static bool first_left(world *w) {
    return w->c[0].left >= 1;
}

static bool second_joined(world *w) {
    return w->c[2].joined >= 1;
}

TEST(reload_crl) {
    world w = {0};
    w.zctx = fed_net_context_new();
    fed_server_config sc = server_config("tcp://127.0.0.1:0");
    CHECK_OK(fed_server_new(&w.srv, w.zctx, &sc));
    if (!w.srv) goto done;
    const char *ep = fed_server_endpoint(w.srv);
    fed_client_config c0 = client_config(ep, "ca", "site-2");
    fed_client_config c1 = client_config(ep, "ca", "site-3");
    CHECK_OK(fed_client_new(&w.cli[0], w.zctx, &c0));
    CHECK_OK(fed_client_new(&w.cli[1], w.zctx, &c1));
    w.ncli = 2;
    CHECK(world_until(&w, two_joined, 15000));
    size_t closed = 99;
    /* Nothing revoked yet among them: nothing closed. */
    CHECK_OK(fed_server_reload_crl(w.srv, &closed));
    CHECK_SIZE(closed, 0);

    CHECK_INT(sh("%s revoke %s/ca site-2 >/dev/null", FED_CERTS_SCRIPT, certdir), 0);
    log_clear();
    CHECK_OK(fed_server_reload_crl(w.srv, &closed));
    CHECK_SIZE(closed, 1);
    CHECK_INT(log_count("dropped peer site-2", "certificate revoked (CRL reloaded)"), 1);
    CHECK(world_until(&w, first_left, 5000));
    CHECK_INT(w.s.left, 1);
    CHECK_ERR(w.s.left_err, FED_EAUTH);
    CHECK_STR(w.s.left_reason, "certificate revoked (CRL reloaded)");
    CHECK(fed_client_ready(w.cli[1]));
    fed_net_stats st;
    fed_server_stats(w.srv, &st);
    CHECK_SIZE(st.sessions, 1);

    /* Its reconnect meets the new CRL. */
    w.c[0].left = 0;
    CHECK_OK(fed_client_reconnect(w.cli[0]));
    CHECK(world_until(&w, first_left, 10000));
    CHECK(w.c[0].left_permanent);
    CHECK_CONTAINS(w.c[0].left_reason, "revoked");
    CHECK_INT(w.s.joined, 2);

    /* A bad CRL file: refused, the CRL in force stays. */
    CHECK_INT(sh("cp %s/ca/crl.pem %s/crl.good && echo garbage > %s/ca/crl.pem", certdir, certdir,
                 certdir),
              0);
    closed = 99;
    CHECK_ERR(fed_server_reload_crl(w.srv, &closed), FED_EINVAL);
    CHECK_SIZE(closed, 0);
    CHECK_CONTAINS(fed_server_errmsg(w.srv), "reload CRL: ");
    CHECK_CONTAINS(fed_server_errmsg(w.srv), "crl.pem: no CRL in the file: not a PEM CRL");
    CHECK(fed_client_ready(w.cli[1]));
    w.c[0].left = 0;
    CHECK_OK(fed_client_reconnect(w.cli[0]));
    CHECK(world_until(&w, first_left, 10000));
    CHECK(w.c[0].left_permanent); /* still revoked */
    fed_client_config c2 = client_config(ep, "ca", "site-4");
    CHECK_OK(fed_client_new(&w.cli[2], w.zctx, &c2));
    w.ncli = 3;
    CHECK(world_until(&w, second_joined, 10000)); /* the others still join */
    CHECK_INT(sh("cp %s/crl.good %s/ca/crl.pem", certdir, certdir), 0);
done:
    world_free(&w);
}

TEST(reload_crl_needs_a_crl) {
    void *ctx = fed_net_context_new();
    fed_server *s = NULL;
    fed_server_config sc = server_config("tcp://127.0.0.1:0");
    sc.net.tls.crl_file = NULL;
    CHECK_OK(fed_server_new(&s, ctx, &sc));
    size_t closed = 7;
    if (s) {
        CHECK_ERR(fed_server_reload_crl(s, &closed), FED_EINVAL);
        CHECK_SIZE(closed, 0);
        CHECK_CONTAINS(fed_server_errmsg(s), "no CRL file configured");
    }
    fed_server_destroy(&s);
    fed_server_config pc = fed_server_default_config();
    pc.endpoint = "inproc://admin-plain";
    pc.net.plaintext = true;
    CHECK_OK(fed_server_new(&s, ctx, &pc));
    if (s) {
        CHECK_ERR(fed_server_reload_crl(s, NULL), FED_EINVAL);
        CHECK_CONTAINS(fed_server_errmsg(s), "plaintext mode has no CRL");
    }
    fed_server_destroy(&s);
    fed_net_context_destroy(&ctx);
}

int main(void) {
    fed_log_set_handler(log_handler, NULL, FED_LOG_DEBUG);
    if (certs_make() != 0 ||
        sh("%s admin %s/ca ops >/dev/null 2>&1", FED_CERTS_SCRIPT, certdir) != 0) {
        fprintf(stderr, "cannot make test certificates with %s\n", FED_CERTS_SCRIPT);
        certs_remove();
        return 1;
    }
    RUN(cert_role);
    RUN(role_in_events);
    RUN(reload_crl);
    RUN(reload_crl_needs_a_crl);
    certs_remove();
    return test_report();
}
