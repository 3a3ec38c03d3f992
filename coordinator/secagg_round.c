/* The coordinator's side of secure aggregation (privacy/secagg.h) for one attempt:
 * choosing participants and their ids, relaying the key and share phases, the masked
 * uploads summed on arrival, dropping participants that fall out, and the unmask phase
 * that yields the survivors' sum. The maths and the message formats are privacy/. */
#include "coordinator/internal.h"

/* A participant's key block must be signed by the certificate of the client it claims to
 * be: a federation site certificate whose CN is that client's. */
static fed_err sa_verify(void *ctx, uint32_t id, const uint8_t *signed_bytes, size_t signed_len,
                         const uint8_t *sig, size_t sig_len) {
    fed_coord *c = ctx;
    const client *k = &c->cl[c->sec.cl[id]];
    char cn[FED_ID_CN_MAX + 1];
    fed_err err = fed_id_verify(c->sec.id, signed_bytes, signed_len, sig, sig_len, true, cn);
    if (err) return err;
    if (strcmp(cn, k->cn) != 0)
        return fed_errorf(FED_EAUTH, "keys signed by %s, not by the sender", cn);
    return FED_OK;
}

/* Takes k out of the attempt's secure aggregation: it is told, and not waited for. */
static void sa_exclude(fed_coord *c, client *k, const char *why) {
    FED_LOG(FED_LOG_WARN, "round %" PRIu64 ": %s out of the secure aggregation: %s",
            fed__coord_current_round(c), k->cn, why);
    snprintf(k->why, sizeof k->why, "out of the secure aggregation: %s", why);
    fed__coord_drop_update(c, k);
    k->status = ST_OUT;
    c->cur.failed++;
    fed_msg m;
    memset(&m, 0, sizeof m);
    m.type = FED_MSG_ERROR;
    m.u.error.code = FED_WIRE_INVALID;
    m.u.error.text = why;
    m.u.error.round = fed__coord_current_round(c);
    m.u.error.attempt = c->att.n;
    if (k->connected && fed_server_send(c->srv, k->peer, &m) != FED_OK)
        FED_LOG(FED_LOG_DEBUG, "error to %s not sent: %s", k->cn, fed_server_errmsg(c->srv));
}

static fed_err sa_send(fed_coord *c, client *k, uint8_t *msg, size_t len) {
    fed_msg m;
    memset(&m, 0, sizeof m);
    m.type = FED_MSG_SECAGG;
    m.u.secagg.round = fed__coord_current_round(c);
    m.u.secagg.msg = msg;
    m.u.secagg.len = len;
    return fed_server_send(c->srv, k->peer, &m);
}

/* A SecAgg message of participant k: ADVERTISE, SHARES or UNMASK_REPLY, each only in
 * its phase. A refused one takes k out of the round (the protocol state is unchanged). */
void fed__coord_on_secagg(fed_coord *c, client *k, const fed_msg_secagg *m) {
    if (!c->sec.sa || c->state != FED_COORD_COLLECTING || m->round != fed__coord_current_round(c) ||
        k->status == ST_IDLE || k->status == ST_OUT || k->status == ST_GONE) {
        FED_LOG(FED_LOG_DEBUG, "%s: secagg message for round %" PRIu64 " ignored", k->cn, m->round);
        return;
    }
    int type = m->msg[0];
    fed_err err = FED_OK;
    if (type == FED_SA_MSG_ADVERTISE && c->sec.phase == SA_KEYS && !(k->sa_got & GOT_KEYS)) {
        err = fed_sa_server_add_keys(c->sec.sa, k->sa_id, m->msg, m->len,
                                     c->sec.id ? sa_verify : NULL, c);
        if (!err) k->sa_got |= GOT_KEYS;
    } else if (type == FED_SA_MSG_SHARES && c->sec.phase == SA_SHARES &&
               !(k->sa_got & GOT_SHARES)) {
        err = fed_sa_server_add_shares(c->sec.sa, k->sa_id, m->msg, m->len);
        if (!err) k->sa_got |= GOT_SHARES;
    } else if (type == FED_SA_MSG_UNMASK_REPLY && c->sec.phase == SA_UNMASK &&
               k->status == ST_ACCEPTED && !(k->sa_got & GOT_UNMASK)) {
        k->sa_got |= GOT_UNMASK; /* answered, well or not: not waited for any more */
        err = fed_sa_server_add_unmask(c->sec.sa, k->sa_id, m->msg, m->len);
        if (err)
            FED_LOG(FED_LOG_WARN, "round %" PRIu64 ": unmasking reply of %s refused: %s",
                    fed__coord_current_round(c), k->cn, fed_errmsg());
        return; /* a survivor stays one: its update is in the sum */
    } else {
        err = fed_errorf(FED_EPROTO, "secagg message type %d out of turn", type);
    }
    if (err) {
        char why[300];
        snprintf(why, sizeof why, "%s", fed_errmsg());
        sa_exclude(c, k, why);
    }
}

/* Secure aggregation of a new attempt over the k sampled clients among ready[0..n) (in
 * CN order): participant ids in that order, the round's parameters, a fresh graph seed. */
fed_err fed__coord_sa_begin(fed_coord *c, client **ready, size_t n, size_t k) {
    if (k < 2 || k > FED_SA_CLIENTS_MAX)
        return fed_errorf(FED_EINVAL, "secagg: %zu sampled clients (must be 2..%d)", k,
                          FED_SA_CLIENTS_MAX);
    fed_sa_params *p = &c->sec.params;
    fed_sa_params_default(p, (uint32_t)k,
                          c->stats.active ? fed_mom_len(c->stats.groups) : c->ntrainable);
    if (c->cfg.secagg.degree) p->degree = c->cfg.secagg.degree;
    if (c->cfg.secagg.threshold) {
        p->threshold = c->cfg.secagg.threshold;
    } else if (c->cfg.secagg.degree) { /* the smallest valid threshold of that degree */
        p->threshold = (fed_sa_degree(p) + 1) / 2 + 1;
    }
    if (c->cfg.secagg.clip > 0) p->clip_range = c->cfg.secagg.clip;
    if (c->cfg.secagg.quant) p->quant_range = c->cfg.secagg.quant;
    if (c->stats.active) { /* limbs in [0, 2^21) travel unchanged (dataset/moments.h) */
        p->clip_range = FED_MOM_CLIP;
        p->quant_range = FED_MOM_QUANT;
    }
    p->round = fed__coord_current_round(c);
    fed_err err = fed_sa_params_check(p);
    if (!err) err = fed_sa_random_bytes(p->graph_seed, sizeof p->graph_seed);
    if (err) return fed_errprefix(err, "secagg with %zu sampled clients", k);
    size_t *map = fed_realloc(c->sec.cl, k * sizeof *map);
    if (!map) return FED_ENOMEM;
    c->sec.cl = map;
    uint32_t id = 0;
    for (size_t i = 0; i < n; i++) {
        if (ready[i]->status != ST_WAITING) continue;
        ready[i]->sa_id = id;
        ready[i]->sa_got = 0;
        c->sec.cl[id++] = (size_t)(ready[i] - c->cl);
    }
    fed_sa_server_destroy(&c->sec.sa);
    if ((err = fed_sa_server_new(&c->sec.sa, p))) return err;
    c->sec.phase = SA_KEYS;
    c->sec.deadline = fed_now_ms() + c->cfg.secagg.phase_ms;
    c->sec.survivors = 0;
    c->cur.secagg_dropped = 0;
    return FED_OK;
}

/* Gives up the attempt (secure aggregation cannot finish): retried like one short of
 * min_fit. */
static fed_coord_state sa_abort(fed_coord *c, const char *why) {
    char what[400];
    snprintf(what, sizeof what, "secure aggregation cannot finish: %s", why);
    return fed__coord_attempt_failed(c, what);
}

typedef fed_err (*sa_for_fn)(fed_sa_server *, uint32_t, uint8_t **, size_t *);

/* Ends a collection phase: sends each participant still in (status in `want`) its
 * message of the next phase (for_fn); one the protocol has excluded is told so. Returns
 * false (and *next) when the attempt aborts. */
static bool sa_send_phase(fed_coord *c, sa_for_fn for_fn, cstatus want, const char *what,
                          fed_coord_state *next) {
    for (uint32_t id = 0; id < c->sec.params.n; id++) {
        client *k = &c->cl[c->sec.cl[id]];
        if (k->status != want) continue;
        uint8_t *msg = NULL;
        size_t len = 0;
        fed_err err = for_fn(c->sec.sa, id, &msg, &len);
        if (err == FED_ENOTFOUND) {
            char why[300];
            snprintf(why, sizeof why, "no %s in time, or too few of its neighbours remain", what);
            sa_exclude(c, k, why);
            continue;
        }
        if (err) {
            char why[300];
            snprintf(why, sizeof why, "%s", fed_errmsg());
            *next = sa_abort(c, why);
            return false;
        }
        err = sa_send(c, k, msg, len);
        fed_free(msg);
        if (err) {
            FED_LOG(FED_LOG_WARN, "round %" PRIu64 ": cannot reach %s: %s",
                    fed__coord_current_round(c), k->cn, fed_server_errmsg(c->srv));
            snprintf(k->why, sizeof k->why, "unreachable: %s", fed_server_errmsg(c->srv));
            fed__coord_drop_update(c, k);
            k->status = ST_GONE;
        }
    }
    return true;
}

/* The statistics round's secure sum: the exact fixed-point sums of the survivors' limbs
 * into st_sum. */
static fed_err sa_finalize_moments(fed_coord *c, size_t *survivors) {
    size_t n = fed_mom_len(c->stats.groups);
    float *sum = fed_mallocarray(n, sizeof *sum);
    uint32_t *fixed = fed_mallocarray(n, sizeof *fixed);
    fed_err err = sum && fixed ? FED_OK : FED_ENOMEM;
    if (!err) err = fed_sa_server_finalize(c->sec.sa, sum, fixed, n, survivors);
    if (!err) err = fed_mom_sum_add_fixed(&c->stats.sum, fixed, *survivors);
    fed_free(sum);
    fed_free(fixed);
    return err;
}

/* The key exchange and unmasking phases of a securely aggregated attempt; the masked
 * uploads between them are collected like plain updates (fed__coord_collect_updates). */
fed_coord_state fed__coord_sa_collect(fed_coord *c) {
    int64_t now = fed_now_ms();
    bool pending = false;
    for (uint32_t id = 0; id < c->sec.params.n; id++) {
        const client *k = &c->cl[c->sec.cl[id]];
        if (c->sec.phase == SA_KEYS)
            pending |= k->status == ST_WAITING && !(k->sa_got & GOT_KEYS);
        else if (c->sec.phase == SA_SHARES)
            pending |= k->status == ST_WAITING && !(k->sa_got & GOT_SHARES);
        else
            pending |= k->status == ST_ACCEPTED && k->connected && !(k->sa_got & GOT_UNMASK);
    }
    if (pending && now < c->sec.deadline) return FED_COORD_COLLECTING;
    fed_coord_state next = FED_COORD_COLLECTING;
    switch (c->sec.phase) {
    case SA_KEYS:
        if (!sa_send_phase(c, fed_sa_server_keys_for, ST_WAITING, "keys", &next)) return next;
        c->sec.phase = SA_SHARES;
        c->sec.deadline = now + c->cfg.secagg.phase_ms;
        return FED_COORD_COLLECTING;
    case SA_SHARES:
        if (!sa_send_phase(c, fed_sa_server_shares_for, ST_WAITING, "shares", &next)) return next;
        c->sec.phase = SA_MASKED; /* now fed__coord_collect_updates, under the round's deadline */
        return FED_COORD_COLLECTING;
    case SA_UNMASK: {
        size_t survivors = 0;
        fed_err err = c->stats.active ? sa_finalize_moments(c, &survivors)
                                      : fed_sa_server_finalize(c->sec.sa, c->sec.sum, NULL,
                                                               c->ntrainable, &survivors);
        if (err) {
            char why[300];
            snprintf(why, sizeof why, "%s", fed_errmsg());
            return sa_abort(c, why);
        }
        size_t shared = 0;
        for (uint32_t id = 0; id < c->sec.params.n; id++)
            shared += (c->cl[c->sec.cl[id]].sa_got & GOT_SHARES) != 0;
        c->sec.survivors = survivors;
        c->cur.secagg_dropped = shared > survivors ? shared - survivors : 0;
        return FED_COORD_AGGREGATING;
    }
    case SA_MASKED:
        break;
    }
    return FED_COORD_COLLECTING;
}

/* The masked uploads are in: late participants are out, the survivors are asked for the
 * shares that remove the masks. */
fed_coord_state fed__coord_sa_begin_unmask(fed_coord *c) {
    for (uint32_t id = 0; id < c->sec.params.n; id++) {
        client *k = &c->cl[c->sec.cl[id]];
        if (k->status == ST_WAITING || k->status == ST_PENDING || k->status == ST_RECEIVING) {
            fed__coord_drop_update(c, k);
            k->status = ST_OUT; /* late: its update will be refused */
        }
    }
    fed_coord_state next = FED_COORD_COLLECTING;
    c->sec.phase = SA_UNMASK;
    c->sec.deadline = fed_now_ms() + c->cfg.secagg.phase_ms;
    if (!sa_send_phase(c, fed_sa_server_unmask_for, ST_ACCEPTED, "masked update", &next))
        return next;
    return fed__coord_sa_collect(c); /* closes at once if nobody is left to ask */
}
