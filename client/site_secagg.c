/* The site's side of secure aggregation (privacy/secagg.h; docs/ROUNDS.md), for a
 * RoundStart with secagg: fresh keys signed with the site's certificate key advertised at
 * once, the neighbours' key blocks checked against the federation's CA, shares sent as
 * soon as the neighbours are known (also while training: pump hands these messages over
 * at once), then the delta clipped (and noised, with DP) and masked by the round's
 * pipeline (site_pipeline.h) and sent as the round's MASKED Update, and the unmasking
 * answered. The coordinator learns only the sum. What deliberately does not live here:
 * the primitives (privacy/), the stages that encode the update (stage_*.c), the round's
 * plain path and its end (site_round.c). I/O thread only. */
#include "client/site_internal.h"

#include "core/alloc.h"
#include "core/log.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* Floats of the manifest's trainable tensors: the length of the round's update. */
static size_t manifest_trainable(const fed_msg_manifest *mf) {
    uint64_t n = 0, b = 0;
    for (size_t i = 0; i < mf->num_tensors; i++)
        if (mf->tensors[i].trainable && fed_msg_tensor_bytes(&mf->tensors[i], &b)) n += b / 4u;
    return (size_t)n;
}

static fed_err sa_send(fed_site *s, const uint8_t *msg, size_t len) {
    fed_msg m = {.type = FED_MSG_SECAGG};
    m.u.secagg.round = s->round.rs->round;
    m.u.secagg.msg = msg;
    m.u.secagg.len = len;
    return site_send_msg(s, &m);
}

/* The neighbours' key blocks must be signed by distinct site certificates of the
 * federation's CA, none of them ours: the coordinator cannot slip in keys of its own. */
typedef struct sa_verify_ctx {
    const fed_id *id;
    char (*cn)[FED_ID_CN_MAX + 1]; /* CNs seen so far */
    size_t n, cap;
} sa_verify_ctx;

static fed_err sa_verify(void *ctx, uint32_t who, const uint8_t *signed_bytes, size_t signed_len,
                         const uint8_t *sig, size_t sig_len) {
    sa_verify_ctx *v = ctx;
    char cn[FED_ID_CN_MAX + 1];
    fed_err err = fed_id_verify(v->id, signed_bytes, signed_len, sig, sig_len, true, cn);
    if (err) return fed_errprefix(err, "secagg: the keys of neighbour %u", (unsigned)who);
    if (strcmp(cn, fed_id_cn(v->id)) == 0)
        return fed_errorf(FED_EAUTH, "secagg: neighbour %u signed with our own certificate (%s)",
                          (unsigned)who, cn);
    for (size_t i = 0; i < v->n; i++)
        if (strcmp(v->cn[i], cn) == 0)
            return fed_errorf(FED_EAUTH, "secagg: neighbour %u and another both signed as %s",
                              (unsigned)who, cn);
    if (v->n == v->cap) return fed_errorf(FED_EPROTO, "secagg: more neighbours than the degree");
    snprintf(v->cn[v->n++], sizeof v->cn[0], "%s", cn);
    return FED_OK;
}

/* Forgets the secure aggregation of the round (its secrets are wiped). */
void site_sa_clear(fed_site *s) {
    fed_sa_client_destroy(&s->sa.client);
    fed_free(s->sa.delivery);
    fed_free(s->sa.masked);
    s->sa.delivery = s->sa.masked = NULL;
    s->sa.delivery_len = s->sa.masked_len = 0;
}

/* RoundStart with secagg: fresh keys, signed with our certificate's key, advertised at
 * once (the key exchange overlaps the model transfer and the training). */
fed_err site_sa_start(fed_site *s) {
    const fed_msg_round_start *rs = s->round.rs;
    const fed_msg_secagg_params *m = &rs->secagg;
    fed_sa_params p = {.n = m->n,
                       .degree = m->degree,
                       .threshold = m->threshold,
                       .clip_range = m->clip_range,
                       .quant_range = m->quant_range,
                       .len = rs->stats ? s->res.delta_n : manifest_trainable(&rs->manifest),
                       .round = rs->round};
    memcpy(p.graph_seed, m->graph_seed, sizeof p.graph_seed);
    fed_err err = fed_sa_params_check(&p);
    if (err) return fed_errprefix(err, "round_start.secagg");
    if ((err = fed_sa_client_new(&s->sa.client, &p, m->participant))) return err;
    uint8_t block[FED_SA_SIGNED_LEN], sig[FED_ID_BLOB_MAX];
    size_t sig_len = 0;
    fed_sa_client_keys_to_sign(s->sa.client, block);
    if (s->sa.id && (err = fed_id_sign(s->sa.id, block, sizeof block, sig, sizeof sig, &sig_len)))
        return err;
    uint8_t *out = NULL;
    size_t len = 0;
    if ((err = fed_sa_client_advertise(s->sa.client, sig, sig_len, &out, &len))) return err;
    err = sa_send(s, out, len);
    fed_free(out);
    return err;
}

/* The delta is ready and the neighbours' shares are here: the stages of the round's
 * pipeline that run when sending (clip and noise for differential privacy, "mask") make
 * the MASKED message, sent as the round's Update. */
fed_err site_sa_send_masked(fed_site *s) {
    fed_free(s->sa.masked);
    s->sa.masked = NULL;
    s->sa.masked_len = 0;
    site_update u = {.round = s->round.rs->round, .v = s->res.delta, .n = s->res.delta_n};
    fed_err err = site_stage_run(s->round.pipe, SITE_STAGE_SENT, &u);
    s->sa.masked = u.wire;
    s->sa.masked_len = u.wire_len;
    if (err) return err;
    return site_send_update(s, FED_ENCODING_SECAGG_MASKED, s->sa.masked, s->sa.masked_len);
}

/* A secure-aggregation message of the coordinator. Handled at once, even while the
 * round trains (the key exchange runs alongside); a failure fails the round (training
 * in progress stops after its epoch). */
void site_on_secagg(fed_site *s, uint64_t round, const uint8_t *msg, size_t len) {
    if (!s->sa.client || !s->round.rs || round != s->round.rs->round || len == 0) {
        FED_LOG(FED_LOG_DEBUG, "site: secagg message for round %" PRIu64 " ignored", round);
        return;
    }
    uint8_t *out = NULL;
    size_t out_len = 0;
    fed_err err = FED_OK;
    switch (msg[0]) {
    case FED_SA_MSG_NEIGHBOURS: {
        sa_verify_ctx v = {.id = s->sa.id, .cap = s->round.rs->secagg.n};
        if (s->sa.id && !(v.cn = fed_mallocarray(v.cap, sizeof *v.cn))) {
            err = FED_ENOMEM;
            break;
        }
        err = fed_sa_client_share(s->sa.client, msg, len, s->sa.id ? sa_verify : NULL, &v, &out,
                                  &out_len);
        fed_free(v.cn);
        if (!err) err = sa_send(s, out, out_len);
        break;
    }
    case FED_SA_MSG_DELIVERY:
        if (s->sa.delivery) {
            err = fed_errorf(FED_EPROTO, "secagg: a second DELIVERY for round %" PRIu64, round);
            break;
        }
        if (!(s->sa.delivery = fed_malloc(len))) {
            err = FED_ENOMEM;
            break;
        }
        memcpy(s->sa.delivery, msg, len);
        s->sa.delivery_len = len;
        if (s->round.state == ROUND_SHARES) err = site_sa_send_masked(s);
        break;
    case FED_SA_MSG_UNMASK_REQUEST:
        if (s->round.state != ROUND_UNMASKING) {
            err = fed_errorf(FED_EPROTO,
                             "secagg: UNMASK_REQUEST before our masked update was delivered");
            break;
        }
        err = fed_sa_client_unmask(s->sa.client, msg, len, &out, &out_len);
        if (!err) err = sa_send(s, out, out_len);
        if (!err) {
            fed_free(out);
            site_round_done(s);
            return;
        }
        break;
    default:
        err = fed_errorf(FED_EPROTO, "secagg: unexpected message type %u", (unsigned)msg[0]);
        break;
    }
    fed_free(out);
    if (!err) return;
    /* The round cannot finish with us. */
    FED_LOG(FED_LOG_WARN, "site: round %" PRIu64 ": secure aggregation failed: %s", round,
            fed_errmsg());
    int job = atomic_load(&s->job.state);
    if (s->fit.in_fit || job == JOB_RUNNING) { /* training still reads the round: stop it */
        fed_sa_client_destroy(&s->sa.client);
        char text[TEXT_MAX];
        snprintf(text, sizeof text, "%s", fed_errdetail(err));
        site_send_error(s, fed_wire_err_of(err), text, true);
        s->stats.rounds_failed++;
        site_interrupt(s, "secure aggregation failed");
        return;
    }
    site_fail_round_err(s, err);
}
