/* The registry of sites, keyed by certificate CN, and the handling of what they send:
 * network events (joined, left, transfers), messages (Update, Error, SecAgg, Bye), the
 * RoundStart and model each sampled site is sent, and refusals (Error back to the site,
 * one log line). What an Update is checked against lives in collect.c. */
#include "coordinator/internal.h"

/* The registry is indexed twice, so an event costs O(1) at 10 000 sites: by CN (open
 * addressing, linear probing) and by the network's peer handle (dense, from 1). */

static size_t cn_hash(const char *cn) {
    return (size_t)fed_hash_bytes(cn, strlen(cn));
}

static client *by_peer(fed_coord *c, uint32_t peer) {
    if (peer >= c->reg.peer_cap || !c->reg.by_peer[peer]) return NULL;
    return &c->cl[c->reg.by_peer[peer] - 1];
}

static void cn_insert(fed_coord *c, size_t idx) {
    size_t mask = c->reg.cn_cap - 1, h = cn_hash(c->cl[idx].cn) & mask;
    while (c->reg.by_cn[h]) h = (h + 1) & mask;
    c->reg.by_cn[h] = (uint32_t)idx + 1;
}

/* Makes room for one more client: the array, and the CN index kept at most half full. */
static fed_err reg_grow(fed_coord *c) {
    if (c->ncl == c->capcl) {
        size_t cap = c->capcl ? 2 * c->capcl : 16;
        client *p = fed_realloc(c->cl, cap * sizeof *p);
        if (!p) return FED_ENOMEM;
        c->cl = p;
        c->capcl = cap;
    }
    if (2 * (c->ncl + 1) > c->reg.cn_cap) {
        size_t cap = c->reg.cn_cap ? 2 * c->reg.cn_cap : 64;
        uint32_t *t = fed_calloc(cap, sizeof *t);
        if (!t) return FED_ENOMEM;
        fed_free(c->reg.by_cn);
        c->reg.by_cn = t;
        c->reg.cn_cap = cap;
        for (size_t i = 0; i < c->ncl; i++) cn_insert(c, i);
    }
    return FED_OK;
}

/* Records that peer is client k's handle now (a handle is never reused for another CN). */
static fed_err set_peer(fed_coord *c, client *k, uint32_t peer) {
    if (peer >= c->reg.peer_cap) {
        size_t cap = c->reg.peer_cap ? c->reg.peer_cap : 64;
        while (cap <= peer) cap *= 2;
        uint32_t *t = fed_realloc(c->reg.by_peer, cap * sizeof *t);
        if (!t) return FED_ENOMEM;
        memset(t + c->reg.peer_cap, 0, (cap - c->reg.peer_cap) * sizeof *t);
        c->reg.by_peer = t;
        c->reg.peer_cap = cap;
    }
    k->peer = peer;
    c->reg.by_peer[peer] = (uint32_t)(k - c->cl) + 1;
    return FED_OK;
}

client *fed__coord_find(fed_coord *c, const char *cn) {
    if (!c->reg.cn_cap) return NULL;
    size_t mask = c->reg.cn_cap - 1;
    for (size_t h = cn_hash(cn) & mask; c->reg.by_cn[h]; h = (h + 1) & mask)
        if (strcmp(c->cl[c->reg.by_cn[h] - 1].cn, cn) == 0) return &c->cl[c->reg.by_cn[h] - 1];
    return NULL;
}

static client *by_cn(fed_coord *c, const char *cn, uint32_t peer) {
    client *k = fed__coord_find(c, cn);
    if (!k) {
        if (reg_grow(c) != FED_OK) return NULL;
        k = &c->cl[c->ncl++];
        memset(k, 0, sizeof *k);
        snprintf(k->cn, sizeof k->cn, "%s", cn);
        cn_insert(c, c->ncl - 1);
    }
    if (set_peer(c, k, peer) != FED_OK) return NULL;
    return k;
}

size_t fed__coord_connected_count(const fed_coord *c) {
    size_t n = 0;
    for (size_t i = 0; i < c->ncl; i++) n += c->cl[i].connected;
    return n;
}

/* The open round: 0 for the statistics round, then 1, 2, ... */
uint64_t fed__coord_current_round(const fed_coord *c) {
    return c->stats.active ? 0 : c->rounds_done + 1;
}

/* "round 3", or "statistics round" for round 0: how log lines and reasons name it. */
const char *fed__coord_round_name(const fed_coord *c, char buf[32]) {
    if (c->stats.active) return "statistics round";
    snprintf(buf, 32, "round %" PRIu64, fed__coord_current_round(c));
    return buf;
}

/* Whether uploads arrive as bytes into sa_buf (masked uploads, the statistics round's
 * moments) rather than as deltas into aggregator slots. */
bool fed__coord_bytes_upload(const fed_coord *c) {
    return c->cfg.secagg.on || c->stats.active;
}

/* Cancels a transfer that may already be gone (FED_ENOTFOUND is fine). */
void fed__coord_cancel(fed_coord *c, uint32_t peer, uint64_t id) {
    if (fed_server_cancel_transfer(c->srv, peer, id) != FED_OK) fed_errclear();
}

/* Forgets k's update in flight: cancels the transfer, aborts the slot. */
void fed__coord_drop_update(fed_coord *c, client *k) {
    if (k->status == ST_RECEIVING) {
        fed__coord_cancel(c, k->peer, k->up_id);
        if (fed__coord_bytes_upload(c))
            c->raw.busy[k->slot] = false;
        else
            fed_agg_slot_abort(c->agg, k->slot);
        if (fed__coord_compressed(k)) c->raw.busy[k->raw] = false;
    }
    k->slot = FED_AGG_NO_SLOT;
}

void fed__coord_reject(fed_coord *c, client *k, const fed_msg_update *u, uint32_t code,
                       const char *fmt, ...) {
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    FED_LOG(FED_LOG_WARN, "round %" PRIu64 ": update from %s rejected: %s",
            fed__coord_current_round(c), k->cn, text);
    if (k->status == ST_REJECTED) /* counted out of the attempt: its reason */
        snprintf(k->why, sizeof k->why, "update rejected: %.180s", text);
    fed_msg m;
    memset(&m, 0, sizeof m);
    m.type = FED_MSG_ERROR;
    m.u.error.code = code;
    m.u.error.text = text;
    m.u.error.round = u ? u->round : fed__coord_current_round(c);
    m.u.error.attempt = u ? u->attempt : c->att.n;
    if (k->connected && fed_server_send(c->srv, k->peer, &m) != FED_OK)
        FED_LOG(FED_LOG_DEBUG, "error to %s not sent: %s", k->cn, fed_server_errmsg(c->srv));
    c->rejected_total++;
    fed__coord_status_rejected(c, k, code);
}

/* Rejects the open-round update of k and marks it done for the round. */
void fed__coord_reject_round(fed_coord *c, client *k, uint32_t code, const char *what) {
    fed__coord_drop_update(c, k);
    k->status = ST_REJECTED;
    c->cur.rejected++;
    fed__coord_reject(c, k, NULL, code, "%s", what);
}

/* Sends RoundStart to k, with the weights unless it holds this version (or force): the
 * compressed change when it holds the last version and keeps it (--compress-down), the
 * trainable tensors only when it holds the base, else all of them. */
fed_err fed__coord_send_round_start(fed_coord *c, client *k, bool force) {
    bool with_model = !c->stats.active && (force || k->held != c->version);
    bool delta = with_model && !force && k->delta_down && c->down.len && c->down.to == c->version &&
                 k->held == c->down.from;
    bool part = with_model && !delta && c->base.n && k->base_cache && k->base_held;
    fed_msg m;
    memset(&m, 0, sizeof m);
    m.type = FED_MSG_ROUND_START;
    fed_msg_round_start *rs = &m.u.round_start;
    rs->round = fed__coord_current_round(c);
    rs->model_version = c->version;
    rs->config = c->cfg.train;
    rs->manifest.tensors = c->tensors;
    rs->manifest.num_tensors = c->ntensors;
    rs->manifest.total_bytes = (uint64_t)fed_model_num_params(c->model) * sizeof(float);
    memcpy(rs->manifest.sha256, c->sha, FED_SHA256_LEN);
    rs->manifest.arch = c->arch_json;
    /* Borrowed for encoding only: the message is never freed. */
    rs->manifest.input_transform = c->stats.transform;
    rs->manifest.has_tokenizer = c->cfg.has_tokenizer;
    memcpy(rs->manifest.tokenizer_sha256, c->cfg.tokenizer_sha256, FED_SHA256_LEN);
    if (c->base.n) {
        rs->manifest.has_base = true;
        memcpy(rs->manifest.base_sha256, c->base.sha, FED_SHA256_LEN);
        memcpy(rs->manifest.trainable_sha256, c->base.train_sha, FED_SHA256_LEN);
    }
    uint64_t id = c->version | (part ? TRANSFER_TRAINABLE : 0) | (delta ? TRANSFER_DELTA : 0);
    rs->transfer_id = with_model ? id : 0;
    rs->trainable_only = part;
    if (delta) {
        rs->delta_from = c->down.from;
        rs->delta_bytes = c->down.len;
        memcpy(rs->delta_sha256, c->down.sha, FED_SHA256_LEN);
    }
    rs->attempt = c->att.n;
    rs->stats = c->stats.active;
    rs->compress = fed_codec_on(&c->codec) && !c->stats.active ? c->codec_name : "";
    if (c->sec.sa) {
        const fed_sa_params *p = &c->sec.params;
        rs->has_secagg = true;
        rs->secagg = (fed_msg_secagg_params){.participant = k->sa_id,
                                             .n = p->n,
                                             .degree = p->degree,
                                             .threshold = p->threshold,
                                             .clip_range = p->clip_range,
                                             .quant_range = p->quant_range};
        memcpy(rs->secagg.graph_seed, p->graph_seed, sizeof rs->secagg.graph_seed);
        if (c->cfg.dp.clip > 0 && !c->stats.active) {
            rs->secagg.dp_clip = c->cfg.dp.clip;
            rs->secagg.dp_noise_std = c->cfg.dp.noise * c->cfg.dp.clip / sqrt((double)p->n);
        }
    }
    int64_t left = c->att.deadline - fed_now_ms();
    rs->deadline_ms = (uint64_t)(left > 0 ? left : c->cfg.deadline_ms);
    fed_err err = fed_server_send(c->srv, k->peer, &m);
    if (err || !with_model) return err;
    if (k->sending == id) return FED_OK; /* still on its way (across a reconnect) */
    if (k->sending) fed__coord_cancel(c, k->peer, k->sending);
    fed__coord_cancel(c, k->peer, id);
    uint64_t bytes = delta  ? (uint64_t)c->down.len
                     : part ? (uint64_t)c->ntrainable * sizeof(float)
                            : rs->manifest.total_bytes;
    const void *src = delta  ? (const void *)c->down.bytes
                      : part ? (const void *)c->base.train
                             : (const void *)fed_model_params_const(c->model);
    err = fed_server_send_transfer(c->srv, k->peer, id, src, bytes);
    if (err) return err;
    k->sending = id;
    c->cur.model_bytes += bytes;
    if (delta)
        c->cur.models_delta++;
    else if (part)
        c->cur.models_trainable++;
    else
        c->cur.models_full++;
    return FED_OK;
}

double fed__coord_metric(const fed_msg_update *u, const char *name) {
    for (size_t i = 0; i < u->num_metrics; i++)
        if (strcmp(u->metrics[i].name, name) == 0) return u->metrics[i].value;
    return (double)NAN;
}

static void on_message(fed_coord *c, client *k, const fed_msg *m) {
    switch (m->type) {
    case FED_MSG_UPDATE:
        fed__coord_on_update(c, k, &m->u.update);
        break;
    case FED_MSG_SECAGG:
        fed__coord_on_secagg(c, k, &m->u.secagg);
        break;
    case FED_MSG_ERROR:
        if (m->u.error.code == FED_WIRE_NO_MODEL && k->status == ST_WAITING &&
            c->state == FED_COORD_COLLECTING) {
            FED_LOG(FED_LOG_INFO, "%s does not hold model version %" PRIu64 ": resending it", k->cn,
                    c->version);
            k->held = 0;
            k->base_held = false; /* nor, maybe, the base: send everything */
            if (fed__coord_send_round_start(c, k, true) != FED_OK) k->status = ST_GONE;
        } else if (m->u.error.round == fed__coord_current_round(c) &&
                   m->u.error.attempt == c->att.n &&
                   (k->status == ST_WAITING || k->status == ST_PENDING ||
                    k->status == ST_RECEIVING) &&
                   c->state == FED_COORD_COLLECTING) {
            /* The site's round failed (its data, its training) or it cancelled its upload:
             * it has answered, so the round need not wait for it (nor, with ordered
             * uploads, the sites after it). */
            fed__coord_drop_update(c, k);
            k->status = ST_FAILED;
            c->cur.failed++;
            fed__coord_status_site_failed(c);
            snprintf(k->why, sizeof k->why, "%s", m->u.error.text);
            char name[32];
            FED_LOG(FED_LOG_WARN, "%s: %s failed: %s", fed__coord_round_name(c, name), k->cn,
                    m->u.error.text);
        } else {
            FED_LOG(FED_LOG_WARN, "%s reports error %u: %s", k->cn, m->u.error.code,
                    m->u.error.text);
        }
        break;
    case FED_MSG_BYE:
        FED_LOG(FED_LOG_INFO, "%s says bye: %s", k->cn, m->u.bye.reason);
        break;
    default:
        FED_LOG(FED_LOG_DEBUG, "%s sent %s: ignored", k->cn, fed_msg_type_name(m->type));
        break;
    }
}

/* What a Hello says of the frozen base: whether the site takes trainable-only transfers,
 * and whether it holds our base already (from an earlier session, or its cache); and
 * whether it keeps the version it holds for a downlink delta. */
static void hello_base(const fed_coord *c, client *k, const fed_msg_hello *h) {
    k->base_cache = k->base_held = k->delta_down = false;
    for (size_t i = 0; h && i < h->num_capabilities; i++) {
        if (strcmp(h->capabilities[i], FED_CAP_BASE_CACHE) == 0) k->base_cache = true;
        if (strcmp(h->capabilities[i], FED_CAP_DELTA_DOWN) == 0) k->delta_down = true;
    }
    for (size_t i = 0; h && k->base_cache && c->base.hashed && i < h->num_bases; i++)
        if (memcmp(h->bases[i], c->base.sha, FED_SHA256_LEN) == 0) k->base_held = true;
}

fed_err fed__coord_on_event(fed_coord *c, const fed_net_event *ev) {
    if (ev->type == FED_NET_NONE || fed__coord_admin_event(c, ev)) return FED_OK;
    client *k = ev->type == FED_NET_JOINED ? by_cn(c, ev->cn, ev->peer) : by_peer(c, ev->peer);
    if (!k) return ev->type == FED_NET_JOINED ? FED_ENOMEM : FED_OK;
    switch (ev->type) {
    case FED_NET_JOINED:
        k->connected = true; /* k->peer was set by by_cn */
        k->told = false;     /* a new session has heard nothing yet */
        k->held = 0;         /* nor holds the model: send it again */
        k->hello_examples = ev->msg ? ev->msg->u.hello.train_examples : 0;
        hello_base(c, k, ev->msg ? &ev->msg->u.hello : NULL);
        FED_LOG(FED_LOG_INFO, "%s joined (%zu connected, %" PRIu64 " training examples)", k->cn,
                fed__coord_connected_count(c), k->hello_examples);
        if (k->hello_examples > c->cfg.max_examples_per_site)
            FED_LOG(FED_LOG_WARN,
                    "%s announces %" PRIu64
                    " training examples, above max-examples-per-site %" PRIu64
                    ": its updates will be refused",
                    k->cn, k->hello_examples, c->cfg.max_examples_per_site);
        break;
    case FED_NET_LEFT:
        k->connected = false;
        if (k->status == ST_WAITING || k->status == ST_PENDING || k->status == ST_RECEIVING) {
            fed__coord_drop_update(c, k);
            k->status = ST_GONE;
            snprintf(k->why, sizeof k->why, "left mid-round (%s)", ev->reason);
            FED_LOG(FED_LOG_WARN, "round %" PRIu64 ": %s left mid-round (%s)",
                    fed__coord_current_round(c), k->cn, ev->reason);
        } else {
            FED_LOG(FED_LOG_INFO, "%s left (%s)", k->cn, ev->reason);
        }
        if (k->sending) fed__coord_cancel(c, k->peer, k->sending);
        k->sending = 0;
        break;
    case FED_NET_MESSAGE:
        on_message(c, k, ev->msg);
        break;
    case FED_NET_TRANSFER_SENT:
        if (ev->transfer_id == k->sending) {
            k->held = k->sending & ~(TRANSFER_TRAINABLE | TRANSFER_DELTA);
            k->base_held = true; /* it had it, or has it now */
            k->sending = 0;
        }
        break;
    case FED_NET_TRANSFER_DONE:
        if (k->status == ST_RECEIVING && ev->transfer_id == k->up_id) {
            fed_err err;
            if (c->cfg.secagg.on) { /* summed at once; the buffer is free again */
                err = c->sec.sa ? fed_sa_server_add_masked(c->sec.sa, k->sa_id, c->raw.buf[k->slot],
                                                           (size_t)k->up_bytes)
                                : fed_errorf(FED_EPROTO, "no secure aggregation open");
                c->raw.busy[k->slot] = false;
            } else if (c->stats.active) {
                err = fed__coord_add_moments(c, k, c->raw.buf[k->slot]);
                c->raw.busy[k->slot] = false;
            } else if (fed__coord_compressed(k)) { /* decoded into its slot, then as below */
                err = fed__coord_decode_update(c, k);
            } else {
                err = fed_agg_slot_commit_buffer(c->agg, k->slot, c->cfg.max_update_norm);
            }
            k->slot = FED_AGG_NO_SLOT;
            if (err) {
                k->status = ST_REJECTED;
                c->cur.rejected++;
                fed__coord_reject(c, k, NULL, fed_wire_err_of(err), "%s", fed_errmsg());
            } else {
                k->status = ST_ACCEPTED;
                c->cur.returned++;
                c->cur.update_bytes += k->up_bytes;
                c->cur.updates_compressed += fed__coord_compressed(k);
                k->commit_seq = c->cur.returned;
                fed__coord_status_accepted(c, k);
                FED_LOG(FED_LOG_DEBUG, "round %" PRIu64 ": update from %s accepted (weight %g)",
                        fed__coord_current_round(c), k->cn, k->weight);
            }
        }
        break;
    case FED_NET_TRANSFER_FAILED:
        if (k->status == ST_RECEIVING && ev->transfer_id == k->up_id) {
            if (fed__coord_bytes_upload(c))
                c->raw.busy[k->slot] = false;
            else
                fed_agg_slot_abort(c->agg, k->slot);
            if (fed__coord_compressed(k)) c->raw.busy[k->raw] = false;
            k->slot = FED_AGG_NO_SLOT;
            k->status = ST_REJECTED;
            c->cur.rejected++;
            fed__coord_reject(c, k, NULL, FED_WIRE_DIGEST, "delta: %s", ev->reason);
        }
        break;
    case FED_NET_NONE:
        break;
    }
    fed__coord_status_site(c, k, ev->type == FED_NET_JOINED);
    return FED_OK;
}
