/* A round attempt from its sample to its close: sampling (ordered by CN for
 * reproducibility), broadcasting RoundStart, checking each announced Update against the
 * round (version, encoding, size, example bounds) and receiving it zero-copy into an
 * aggregator slot (or a byte buffer for masked uploads and moments; a compressed update
 * into a byte buffer, then decoded into its slot), the collection's progress and deadline,
 * and failed attempts (grouped reasons, backoff, giving up). */
#include "coordinator/internal.h"

/* Whether k's announced update is a compressed delta (a core/codec.h stream). */
bool fed__coord_compressed(const client *k) {
    return k->up_enc >= FED_ENCODING_DELTA_FP16 && k->up_enc <= FED_ENCODING_DELTA_TOPK;
}

/* The encoding of c's compress codec (DELTA_F32 when off). */
static fed_encoding codec_encoding(const fed_coord *c) {
    if (!fed_codec_on(&c->codec)) return FED_ENCODING_DELTA_F32;
    return (fed_encoding)(FED_ENCODING_DELTA_FP16 + (int)c->codec.id - FED_CODEC_F16);
}

/* A compressed update arrived whole in raw.buf[k->raw]: decoded into k's slot, whose
 * commit then checks it as any delta (finite, norm bound). The stream must be of the
 * round's codec (the size was checked against it before receiving). Frees the buffer;
 * on error the slot is aborted and fed_errmsg says why. */
fed_err fed__coord_decode_update(fed_coord *c, client *k) {
    float *buf = NULL;
    fed_codec got;
    fed_err err = fed_agg_slot_buffer(c->agg, k->slot, &buf);
    if (!err)
        err = fed_codec_decode(c->raw.buf[k->raw], (size_t)k->up_bytes, buf, c->ntrainable, &got);
    if (!err && (got.id != c->codec.id || got.values != c->codec.values))
        err = fed_errorf(FED_EFORMAT, "codec stream of another codec than %s", c->codec_name);
    c->raw.busy[k->raw] = false;
    if (err) {
        fed_agg_slot_abort(c->agg, k->slot);
        return err;
    }
    return fed_agg_slot_commit_buffer(c->agg, k->slot, c->cfg.max_update_norm);
}

/* Starts receiving k's announced upload into a free byte buffer (grown to its size) and
 * marks the buffer busy: 0 and *out the buffer, 1 when every buffer is busy (wait, as
 * for a slot), -1 when k's round was rejected (what names the upload in the reason). */
static int recv_raw(fed_coord *c, client *k, const char *what, size_t *out) {
    size_t b = 0;
    while (b < c->raw.n && c->raw.busy[b]) b++;
    if (b == c->raw.n) return 1;
    if (c->raw.cap[b] < k->up_bytes) { /* the statistics round's are smaller */
        fed_free(c->raw.buf[b]);
        c->raw.cap[b] = 0;
        if (!(c->raw.buf[b] = fed_malloc((size_t)k->up_bytes))) {
            fed__coord_reject_round(c, k, FED_WIRE_INVALID, "coordinator out of memory");
            return -1;
        }
        c->raw.cap[b] = (size_t)k->up_bytes;
    }
    if (fed_server_recv_transfer(c->srv, k->peer, k->up_id, c->raw.buf[b], k->up_bytes,
                                 k->up_sha) != FED_OK) {
        char why[300];
        snprintf(why, sizeof why, "cannot receive the %s: %s", what, fed_server_errmsg(c->srv));
        fed__coord_reject_round(c, k, FED_WIRE_INVALID, why);
        return -1;
    }
    c->raw.busy[b] = true;
    *out = b;
    return 0;
}

/* Opens a slot for k's announced update and starts receiving it; leaves it ST_PENDING
 * when every slot (or, for bytes decoded later, every byte buffer) is busy. */
static void start_receive(fed_coord *c, client *k) {
    size_t b = 0;
    if (fed__coord_bytes_upload(c) && !fed__coord_compressed(k)) { /* summed on arrival */
        if (recv_raw(c, k, "masked update", &b) != 0) return;
        k->slot = (fed_agg_slot)b;
        k->status = ST_RECEIVING;
        return;
    }
    fed_agg_slot s;
    fed_err err = fed_agg_slot_open(c->agg, &s, k->weight);
    if (err == FED_EAGAIN) return;
    if (err) {
        fed__coord_reject_round(c, k, fed_wire_err_of(err), fed_errmsg());
        return;
    }
    if (fed__coord_compressed(k)) { /* a byte buffer now, decoded into the slot later */
        int rc = recv_raw(c, k, "compressed delta", &b);
        if (rc != 0) {
            fed_agg_slot_abort(c->agg, s);
            return;
        }
        k->raw = b;
        k->slot = s;
        k->status = ST_RECEIVING;
        return;
    }
    float *buf = NULL;
    if (!err) err = fed_agg_slot_buffer(c->agg, s, &buf);
    if (!err)
        err = fed_server_recv_transfer(c->srv, k->peer, k->up_id, buf, k->up_bytes, k->up_sha);
    if (err) {
        char why[300];
        snprintf(why, sizeof why, "cannot receive the delta: %s", fed_server_errmsg(c->srv));
        fed_agg_slot_abort(c->agg, s);
        fed__coord_reject_round(c, k, FED_WIRE_INVALID, why);
        return;
    }
    k->slot = s;
    k->status = ST_RECEIVING;
}

void fed__coord_on_update(fed_coord *c, client *k, const fed_msg_update *u) {
    uint64_t r = fed__coord_current_round(c);
    bool open = c->state == FED_COORD_COLLECTING;
    if (!open || u->round != r) {
        fed__coord_reject(c, k, u, FED_WIRE_INVALID,
                          "round %" PRIu64 " is not open (%s %" PRIu64 ")", u->round,
                          open ? "open round" : "next round", r);
        return;
    }
    if (k->status == ST_IDLE) {
        fed__coord_reject(c, k, u, FED_WIRE_INVALID, "not sampled for round %" PRIu64, r);
        return;
    }
    if (u->attempt != c->att.n) { /* answers an attempt that is over: it changes nothing */
        fed__coord_reject(c, k, u, FED_WIRE_INVALID,
                          "attempt %" PRIu64 " of round %" PRIu64 " is over (attempt %" PRIu64
                          " is open)",
                          u->attempt, r, c->att.n);
        return;
    }
    if (k->status == ST_OUT) {
        fed__coord_reject(c, k, u, FED_WIRE_INVALID,
                          "out of round %" PRIu64 "'s secure aggregation", r);
        return;
    }
    if (k->status != ST_WAITING) {
        fed__coord_reject(c, k, u, FED_WIRE_INVALID,
                          "a second update for round %" PRIu64 " attempt %" PRIu64, r, c->att.n);
        return;
    }
    char why[256];
    uint32_t code = FED_WIRE_INVALID;
    why[0] = '\0';
    uint64_t want = (uint64_t)c->ntrainable * sizeof(float);
    fed_encoding enc = FED_ENCODING_DELTA_F32;
    if (c->sec.sa) {
        enc = FED_ENCODING_SECAGG_MASKED;
        want = fed_sa_msg_max(&c->sec.params, FED_SA_MSG_MASKED);
    } else if (c->stats.active) {
        enc = FED_ENCODING_MOMENTS_F32;
        want = (uint64_t)fed_mom_len(c->stats.groups) * sizeof(float);
    } else if (u->encoding != enc && u->encoding == codec_encoding(c)) {
        enc = u->encoding; /* a site that compresses; old sites send DELTA_F32 */
        want = fed_codec_size(&c->codec, c->ntrainable);
    }
    if (c->sec.sa && c->sec.phase != SA_MASKED)
        snprintf(why, sizeof why, "a masked update before the key exchange ended");
    else if (u->model_version != c->version)
        snprintf(why, sizeof why, "model version %" PRIu64 ", current %" PRIu64, u->model_version,
                 c->version);
    else if (u->encoding != enc)
        code = FED_WIRE_UNSUPPORTED,
        snprintf(why, sizeof why, "encoding %d (this round: %d, %s%s)", (int)u->encoding, (int)enc,
                 c->sec.sa         ? "securely aggregated"
                 : c->stats.active ? "moments"
                                   : "plain deltas",
                 !c->sec.sa && !c->stats.active && fed_codec_on(&c->codec) ? " or compressed" : "");
    else if (u->total_bytes != want)
        code = FED_WIRE_SHAPE,
        snprintf(why, sizeof why,
                 "total_bytes %" PRIu64 ", expected %" PRIu64 " (%s %zu trainable parameters)",
                 u->total_bytes, want,
                 c->sec.sa                                           ? "the masked message of"
                 : enc != FED_ENCODING_DELTA_F32 && !c->stats.active ? c->codec_name
                                                                     : "4 x",
                 c->stats.active ? fed_mom_len(c->stats.groups) : c->ntrainable);
    else if (u->examples == 0)
        snprintf(why, sizeof why, "examples 0: must be > 0");
    else if (u->examples > k->hello_examples)
        code = FED_WIRE_RANGE, snprintf(why, sizeof why,
                                        "examples %" PRIu64 ": more than the %" PRIu64
                                        " training examples its Hello announced",
                                        u->examples, k->hello_examples);
    else if (u->examples > c->cfg.max_examples_per_site)
        code = FED_WIRE_RANGE,
        snprintf(why, sizeof why,
                 "examples %" PRIu64 ": above max-examples-per-site %" PRIu64
                 " (a relay claims all of its sites' examples: raise it for relays)",
                 u->examples, c->cfg.max_examples_per_site);
    else if (u->transfer_id == 0)
        snprintf(why, sizeof why, "transfer_id 0");
    if (why[0]) {
        fed__coord_reject_round(c, k, code, why);
        return;
    }
    k->held = c->version;
    k->base_held = true; /* it trained this version: it holds the base */
    k->up_id = u->transfer_id;
    k->up_bytes = u->total_bytes;
    k->up_enc = enc;
    memcpy(k->up_sha, u->sha256, FED_SHA256_LEN);
    /* DP: counts would leak; secagg: the sum is unweighted */
    k->weight = c->cfg.dp.clip > 0 || c->sec.sa ? 1.0 : (double)u->examples; /* <= 2^53: exact */
    k->gloss = fed__coord_metric(u, "global_loss");
    k->tloss = fed__coord_metric(u, "train_loss");
    k->gacc = fed__coord_metric(u, "global_accuracy");
    k->geval = fed__coord_metric(u, "eval_examples");
    if (fed__coord_metric(u, "out_of_time") ==
        1.0) /* the site's training was cut to fit the deadline */
        FED_LOG(FED_LOG_INFO,
                "round %" PRIu64 ": %s stopped training at the deadline after %.0f steps and sent "
                "what it had (%" PRIu64 " examples)",
                r, k->cn, fed__coord_metric(u, "steps"), u->examples);
    k->status = ST_PENDING;
    if (!c->cfg.ordered_uploads)
        start_receive(c, k); /* else fed__coord_collect() takes them in order */
}

/* Ends the current attempt: every update in flight is dropped, every client idle. */
void fed__coord_end_attempt(fed_coord *c) {
    for (size_t i = 0; i < c->ncl; i++) {
        fed__coord_drop_update(c, &c->cl[i]);
        c->cl[i].status = ST_IDLE;
        c->cl[i].sa_got = 0;
        c->cl[i].why[0] = '\0';
    }
    fed_agg_begin_round(c->agg);
    fed_stage_begin_all(c->pipe);
    fed_sa_server_destroy(&c->sec.sa);
    if (c->stats.sum.limbs) { /* a new attempt of the statistics round sums afresh */
        memset(c->stats.sum.limbs, 0, c->stats.sum.len * sizeof *c->stats.sum.limbs);
        c->stats.sum.sites = 0;
    }
}

static int cmp_cn(const void *a, const void *b) {
    return strcmp((*(client *const *)a)->cn, (*(client *const *)b)->cn);
}

fed_err fed__coord_do_sample(fed_coord *c) {
    size_t n = fed__coord_connected_count(c);
    client **ready = fed_calloc(n ? n : 1, sizeof *ready);
    size_t *idx = fed_calloc(n ? n : 1, sizeof *idx);
    if (!ready || !idx) {
        fed_free(ready);
        fed_free(idx);
        return FED_ENOMEM;
    }
    size_t j = 0;
    for (size_t i = 0; i < c->ncl; i++)
        if (c->cl[i].connected) ready[j++] = &c->cl[i];
    qsort(ready, n, sizeof *ready, cmp_cn); /* the sample depends on the seed, not on join order */
    size_t k = (size_t)ceil(c->cfg.fraction * (double)n - 1e-9);
    if (k < c->cfg.min_fit) k = c->cfg.min_fit;
    if (k > n || c->stats.active) k = n; /* the statistics round asks everyone */
    fed__coord_end_attempt(c);
    if (c->stats.active && !c->stats.sum.limbs) {
        fed_err err = fed_mom_sum_init(&c->stats.sum, c->stats.groups);
        if (err) {
            fed_free(ready);
            fed_free(idx);
            return err;
        }
    }
    if (c->att.n == 0) {
        fed_net_stats st;
        fed_server_stats(c->srv, &st);
        c->att.rx0 = st.bytes_received;
        c->att.tx0 = st.bytes_sent;
        c->att.t0 = fed_now_ms();
        c->cur.models_full = c->cur.models_trainable = c->cur.models_delta = 0;
        c->cur.model_bytes = 0;
    }
    c->att.n++;
    c->att.sample_seed =
        fed_mix64(c->cfg.seed ^ fed_mix64(fed__coord_current_round(c) * 1000003u + c->att.n));
    fed_rng rng;
    fed_rng_seed(&rng, c->att.sample_seed);
    for (size_t i = 0; i < n; i++) idx[i] = i;
    fed_rng_shuffle(&rng, idx, n);
    for (size_t i = 0; i < k; i++) ready[idx[i]]->status = ST_WAITING;
    /* The sample in CN order (ready is sorted): the upload order of ordered_uploads. */
    c->att.norder = 0;
    if (c->cfg.ordered_uploads && c->att.caporder < k) {
        size_t *o = fed_realloc(c->att.order, k * sizeof *o);
        if (!o) {
            fed_free(ready);
            fed_free(idx);
            return FED_ENOMEM;
        }
        c->att.order = o;
        c->att.caporder = k;
    }
    for (size_t i = 0; c->cfg.ordered_uploads && i < n; i++)
        if (ready[i]->status == ST_WAITING)
            c->att.order[c->att.norder++] = (size_t)(ready[i] - c->cl);
    fed_err err = c->cfg.secagg.on ? fed__coord_sa_begin(c, ready, n, k) : FED_OK;
    fed_free(ready);
    fed_free(idx);
    if (err) return err;
    c->cur.sampled = k;
    c->att.population = n;
    fed__coord_status_sampled(c, k);
    c->cur.returned = c->cur.rejected = c->cur.failed = 0;
    c->cur.update_bytes = 0;
    c->cur.updates_compressed = 0;
    char name[32];
    FED_LOG(FED_LOG_INFO, "%s attempt %" PRIu64 ": sampled %zu of %zu clients (seed %" PRIu64 ")",
            fed__coord_round_name(c, name), c->att.n, k, n, c->att.sample_seed);
    return FED_OK;
}

void fed__coord_do_broadcast(fed_coord *c) {
    c->att.deadline = fed_now_ms() + c->cfg.deadline_ms;
    c->att.min_fit_at = 0;
    for (size_t i = 0; i < c->ncl; i++) {
        client *k = &c->cl[i];
        if (k->status != ST_WAITING) continue;
        fed_err err = fed__coord_send_round_start(c, k, false);
        if (err) {
            FED_LOG(FED_LOG_WARN, "round %" PRIu64 ": cannot start %s: %s",
                    fed__coord_current_round(c), k->cn, fed_server_errmsg(c->srv));
            snprintf(k->why, sizeof k->why, "could not be sent the round: %s",
                     fed_server_errmsg(c->srv));
            k->status = ST_GONE;
        }
    }
    fed_net_stats st;
    fed_server_stats(c->srv, &st);
    c->att.last_rx = st.bytes_received;
    c->att.last_tx = st.bytes_sent;
}

/* What a sampled client that gave no update said, or why it is counted out. */
static const char *why_of(const client *k) {
    if (k->why[0]) return k->why;
    if (k->status == ST_WAITING || k->status == ST_PENDING || k->status == ST_RECEIVING)
        return "no update before the deadline";
    return "no update";
}

static int cmp_why(const void *a, const void *b) {
    const client *x = *(client *const *)a, *y = *(client *const *)b;
    int d = strcmp(why_of(x), why_of(y));
    return d ? d : strcmp(x->cn, y->cn);
}

/* The reasons the sampled clients of the open attempt gave for no update, grouped, the
 * most frequent first, as one text ("3 of 3 gave none: 3x \"...\" (site-1, site-2,
 * site-3)") in buf; the most frequent reason in main (ties: the first in sorted order). */
static void attempt_reasons(fed_coord *c, char *buf, size_t len, char *main, size_t mainlen) {
    size_t n = 0;
    buf[0] = main[0] = '\0';
    for (size_t i = 0; i < c->ncl; i++)
        n += c->cl[i].status != ST_IDLE && c->cl[i].status != ST_ACCEPTED;
    client **v = fed_calloc(n ? n : 1, sizeof *v);
    if (!v) {
        snprintf(buf, len, "%zu sampled clients gave no update", n);
        return;
    }
    size_t j = 0;
    for (size_t i = 0; i < c->ncl; i++)
        if (c->cl[i].status != ST_IDLE && c->cl[i].status != ST_ACCEPTED) v[j++] = &c->cl[i];
    qsort(v, n, sizeof *v, cmp_why);
    size_t used =
        (size_t)snprintf(buf, len, "%zu of %zu sampled gave no update", n, c->cur.sampled);
    /* Runs of one reason, printed largest first: at most 4 reasons and 3 names each. */
    bool *done = fed_calloc(n ? n : 1, sizeof *done);
    for (int shown = 0; done && shown < 4 && used < len; shown++) {
        size_t best = n, best_len = 0;
        for (size_t a = 0; a < n;) {
            size_t b = a + 1;
            while (b < n && strcmp(why_of(v[a]), why_of(v[b])) == 0) b++;
            if (!done[a] && b - a > best_len) best = a, best_len = b - a;
            a = b;
        }
        if (best == n) break;
        done[best] = true;
        const char *why = why_of(v[best]);
        if (shown == 0) snprintf(main, mainlen, "%s", why);
        used += (size_t)snprintf(buf + used, len - used, "%s %zux \"%s\" (", shown ? ";" : ":",
                                 best_len, why);
        for (size_t q = 0; q < best_len && q < 3 && used < len; q++)
            used +=
                (size_t)snprintf(buf + used, len - used, "%s%s", q ? ", " : "", v[best + q]->cn);
        if (best_len > 3 && used < len)
            used += (size_t)snprintf(buf + used, len - used, " and %zu more", best_len - 3);
        if (used < len) used += (size_t)snprintf(buf + used, len - used, ")");
    }
    fed_free(done);
    fed_free(v);
}

/* The attempt failed (what: how). One warn line with the clients' reasons, then either
 * a retry after the backoff (WAITING until retry_at) or, after max_failed_attempts in a
 * row with the same main reason, the end of the federation (fed__coord_give_up set). */
fed_coord_state fed__coord_attempt_failed(fed_coord *c, const char *what) {
    char reasons[600], main[WHY_MAX], name[32];
    attempt_reasons(c, reasons, sizeof reasons, main, sizeof main);
    if (!main[0]) snprintf(main, sizeof main, "%s", what);
    if (c->cfg.driven) { /* no retry: the caller's round fails, with the reasons */
        char why[800];
        snprintf(why, sizeof why, "%s; %s", what, reasons);
        fed__coord_end_attempt(c);
        fed__coord_status_attempt_failed(c, what);
        fed__coord_drive_failed(c, why);
        FED_LOG(FED_LOG_WARN, "%s attempt %" PRIu64 ": %s", fed__coord_round_name(c, name),
                c->att.n, why);
        return FED_COORD_WAITING;
    }
    if (c->att.same_fails > 0 && strcmp(main, c->att.fail_why) == 0) {
        c->att.same_fails++;
    } else {
        c->att.same_fails = 1;
        snprintf(c->att.fail_why, sizeof c->att.fail_why, "%s", main);
    }
    fed__coord_end_attempt(c);
    fed__coord_status_attempt_failed(c, what);
    uint32_t most = c->cfg.retry.max_failed_attempts;
    if (most && c->att.same_fails >= most) {
        FED_LOG(FED_LOG_WARN, "%s attempt %" PRIu64 ": %s; %s", fed__coord_round_name(c, name),
                c->att.n, what, reasons);
        snprintf(c->att.give_up, sizeof c->att.give_up,
                 "%s failed %" PRIu32 " attempts in a row for the same reason: %s",
                 fed__coord_round_name(c, name), c->att.same_fails, main);
        return FED_COORD_WAITING;
    }
    int64_t delay = c->cfg.retry.backoff_ms;
    for (uint64_t a = 1; a < c->att.n && delay < c->cfg.retry.backoff_max_ms; a++) delay *= 2;
    if (delay > c->cfg.retry.backoff_max_ms) delay = c->cfg.retry.backoff_max_ms;
    c->att.retry_at = fed_now_ms() + delay;
    FED_LOG(FED_LOG_WARN, "%s attempt %" PRIu64 ": %s; %s; retrying in %.3g s",
            fed__coord_round_name(c, name), c->att.n, what, reasons, (double)delay / 1000.0);
    return FED_COORD_WAITING;
}

/* COLLECTING: the secure aggregation phases around the uploads, or just the uploads. */
fed_coord_state fed__coord_collect(fed_coord *c) {
    if (c->sec.sa && c->sec.phase != SA_MASKED) return fed__coord_sa_collect(c);
    fed_coord_state next = fed__coord_collect_updates(c);
    if (next == FED_COORD_AGGREGATING && c->sec.sa) return fed__coord_sa_begin_unmask(c);
    return next;
}

/* COLLECTING: slots for waiting uploads, progress, the close and the deadline. Returns
 * the next state. */
fed_coord_state fed__coord_collect_updates(fed_coord *c) {
    bool busy = false, open = false;
    if (c->cfg.ordered_uploads) {
        /* One upload at a time, in CN order: the first sampled client still expected. */
        for (size_t j = 0; j < c->att.norder; j++) {
            client *k = &c->cl[c->att.order[j]];
            if (k->status == ST_PENDING) start_receive(c, k);
            if (k->status == ST_WAITING || k->status == ST_PENDING || k->status == ST_RECEIVING)
                break;
        }
    }
    for (size_t i = 0; i < c->ncl; i++) {
        client *k = &c->cl[i];
        if (k->status == ST_PENDING && !c->cfg.ordered_uploads) start_receive(c, k);
        if (k->status == ST_RECEIVING || k->sending) busy = true;
        if (k->status == ST_WAITING || k->status == ST_PENDING || k->status == ST_RECEIVING)
            open = true;
    }
    fed_agg_stats as = fed_agg_get_stats(c->agg);
    if (fed__coord_bytes_upload(c))
        as.accepted = c->cur.returned; /* summed on arrival, not by agg */
    int64_t now = fed_now_ms();
    bool enough = as.accepted >= c->cfg.min_fit;
    if (enough && !open) return FED_COORD_AGGREGATING; /* the whole sample answered */
    if (enough && c->att.min_fit_at == 0) c->att.min_fit_at = now;
    if (enough && c->cfg.wait_after_min_ms >= 0 &&
        now - c->att.min_fit_at >= c->cfg.wait_after_min_ms)
        return FED_COORD_AGGREGATING;
    fed_net_stats st;
    fed_server_stats(c->srv, &st);
    if (busy && (st.bytes_received != c->att.last_rx || st.bytes_sent != c->att.last_tx))
        c->att.deadline = now + c->cfg.deadline_ms; /* transfers progress: push the deadline back */
    c->att.last_rx = st.bytes_received;
    c->att.last_tx = st.bytes_sent;
    if (now < c->att.deadline && open) return FED_COORD_COLLECTING;
    if (enough) return FED_COORD_AGGREGATING;
    char what[160];
    snprintf(what, sizeof what, "%s with %zu of %zu updates accepted (min_fit %zu)",
             open ? "deadline passed" : "no update can still come", as.accepted, c->cur.sampled,
             c->cfg.min_fit);
    return fed__coord_attempt_failed(c, what);
}
