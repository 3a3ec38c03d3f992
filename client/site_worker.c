/* Threading of the site's training (client/site_internal.h). While a round trains the
 * channel must still be polled (heartbeats, credits): events polled meanwhile are copied
 * (site_ev owns what it refers to) into a queue that the connection loop drains first
 * once training ends, and the events that make the round pointless (a lost session, a
 * Bye, a new RoundStart, a stop request) set the atomic abort flag that ends training
 * after its epoch. Secure-aggregation messages are handled at once, not queued. With
 * external training a worker thread runs the round as a job (fed_site_job_*): the I/O
 * thread marks it ready, the worker claims and runs it with its own fed_site_trainer,
 * and the I/O thread concludes it; the job's atomic state is the hand-over. What
 * deliberately does not live here: the training itself (site_train.c) and the handling
 * of events (client.c, site_round.c). */
#include "client/site_internal.h"

#include "core/alloc.h"
#include "core/log.h"

#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

/* ------------------------------------------------------------------------------------ */
/* Owned copies of RoundStart and events                                                */

/* A RoundStart is kept as a whole owned message (fed_msg_copy, one fed_malloc'd fed_msg)
 * of which the site holds the round_start; this finds the message back from it. */
static fed_msg *rs_owner(fed_msg_round_start *rs) {
    return (fed_msg *)(void *)((char *)rs - offsetof(fed_msg, u.round_start));
}

void site_rs_free(fed_msg_round_start **p) {
    if (!*p) return;
    fed_msg *m = rs_owner(*p);
    *p = NULL;
    fed_msg_free(m);
    fed_free(m);
}

static fed_err rs_copy(fed_msg_round_start **out, const fed_msg *src) {
    *out = NULL;
    fed_msg *m = fed_malloc(sizeof *m);
    if (!m) return FED_ENOMEM;
    fed_err err = fed_msg_copy(m, src);
    if (err) {
        fed_free(m);
        return err;
    }
    *out = &m->u.round_start;
    return FED_OK;
}

void site_ev_free(site_ev *e) {
    site_rs_free(&e->rs);
    fed_free(e->sa);
    memset(e, 0, sizeof *e);
}

/* Copies what the site needs of a channel event. */
static fed_err ev_take(site_ev *out, const fed_net_event *ev) {
    memset(out, 0, sizeof *out);
    out->type = ev->type;
    out->transfer_id = ev->transfer_id;
    out->err = ev->err;
    out->permanent = ev->permanent;
    if (ev->reason) snprintf(out->text, sizeof out->text, "%s", ev->reason);
    if (ev->type == FED_NET_JOINED) snprintf(out->text, sizeof out->text, "%s", ev->cn);
    if (ev->type != FED_NET_MESSAGE || !ev->msg) return FED_OK;
    const fed_msg *m = ev->msg;
    out->msg = m->type;
    switch (m->type) {
    case FED_MSG_ROUND_START:
        return rs_copy(&out->rs, m);
    case FED_MSG_ERROR:
        out->code = m->u.error.code;
        out->err_round = m->u.error.round;
        out->err_attempt = m->u.error.attempt;
        snprintf(out->text, sizeof out->text, "%s", m->u.error.text ? m->u.error.text : "");
        break;
    case FED_MSG_BYE:
        out->code = m->u.bye.finished; /* 1: the federation is over */
        snprintf(out->text, sizeof out->text, "%s", m->u.bye.reason ? m->u.bye.reason : "");
        break;
    case FED_MSG_SECAGG:
        if (!(out->sa = fed_malloc(m->u.secagg.len ? m->u.secagg.len : 1))) return FED_ENOMEM;
        memcpy(out->sa, m->u.secagg.msg, m->u.secagg.len);
        out->sa_len = m->u.secagg.len;
        out->sa_round = m->u.secagg.round;
        break;
    default:
        break;
    }
    return FED_OK;
}

/* ------------------------------------------------------------------------------------ */
/* Events: polled now, or queued while training                                         */

void site_queue_clear(fed_site *s) {
    for (size_t i = 0; i < s->q.len; i++) site_ev_free(&s->q.ev[(s->q.head + i) % QUEUE_MAX]);
    s->q.head = s->q.len = 0;
}

static fed_err enqueue(fed_site *s, const fed_net_event *ev) {
    site_ev *slot = &s->q.ev[(s->q.head + s->q.len) % QUEUE_MAX];
    fed_err e = ev_take(slot, ev);
    if (e) {
        site_ev_free(slot);
        return e;
    }
    s->q.len++;
    return FED_OK;
}

/* The next event: queued ones first, then the channel (waiting up to timeout_ms). A
 * poll failure is reported as a LEFT event: the connection is unusable. */
fed_err site_next_event(fed_site *s, int timeout_ms, site_ev *out) {
    memset(out, 0, sizeof *out);
    if (s->q.len) {
        *out = s->q.ev[s->q.head];
        memset(&s->q.ev[s->q.head], 0, sizeof s->q.ev[s->q.head]);
        s->q.head = (s->q.head + 1) % QUEUE_MAX;
        s->q.len--;
        return FED_OK;
    }
    fed_net_event ev;
    fed_err e = fed_client_poll(s->conn.cli, timeout_ms, &ev);
    if (e != FED_OK) {
        out->type = FED_NET_LEFT;
        out->err = e;
        snprintf(out->text, sizeof out->text, "%s", fed_client_errmsg(s->conn.cli));
        return FED_OK;
    }
    return ev_take(out, &ev);
}

/* Ends training after the current epoch; the first reason is kept. Called by the
 * thread that owns the site (the worker reads the flag, never the reason). */
void site_interrupt(fed_site *s, const char *why) {
    if (!atomic_load(&s->fit.abort)) snprintf(s->fit.abort_why, sizeof s->fit.abort_why, "%s", why);
    atomic_store(&s->fit.abort, true);
}

/* While training: does the channel's I/O (heartbeats, credits) and queues what it
 * reports. Anything that makes the round pointless ends training after this epoch. */
void site_pump(fed_site *s) {
    while (s->conn.cli && s->q.len < QUEUE_MAX) {
        fed_net_event ev;
        fed_err e = fed_client_poll(s->conn.cli, 0, &ev);
        if (e != FED_OK) {
            fed_net_event left = {
                .type = FED_NET_LEFT, .cn = "", .err = e, .reason = "poll failed"};
            (void)enqueue(s, &left);
            site_interrupt(s, "the connection failed");
            return;
        }
        if (ev.type == FED_NET_NONE) return;
        if (ev.type == FED_NET_MESSAGE && ev.msg->type == FED_MSG_SECAGG) {
            site_on_secagg(s, ev.msg->u.secagg.round, ev.msg->u.secagg.msg, ev.msg->u.secagg.len);
            continue;
        }
        if (ev.type == FED_NET_MESSAGE && ev.msg->type == FED_MSG_ERROR) {
            /* Not about this round: its Update is not sent yet. */
            FED_LOG(FED_LOG_WARN, "site: the coordinator reports error %" PRIu32 ": %s",
                    ev.msg->u.error.code, ev.msg->u.error.text);
            continue;
        }
        if (enqueue(s, &ev) != FED_OK) {
            site_interrupt(s, "out of memory");
            return;
        }
        if (ev.type == FED_NET_LEFT) {
            site_interrupt(s, "the connection ended");
        } else if (ev.type == FED_NET_MESSAGE && ev.msg->type == FED_MSG_BYE) {
            site_interrupt(s, "the coordinator says goodbye");
        } else if (ev.type == FED_NET_MESSAGE && ev.msg->type == FED_MSG_ROUND_START) {
            char why[64];
            snprintf(why, sizeof why, "round %" PRIu64 " started", ev.msg->u.round_start.round);
            site_interrupt(s, why);
        }
    }
    if (s->q.len >= QUEUE_MAX) site_interrupt(s, "too many events while training");
}

/* ------------------------------------------------------------------------------------ */
/* External training                                                                    */

bool fed_site_job_ready(const fed_site *s) {
    return atomic_load(&s->job.state) == JOB_READY;
}

uint64_t fed_site_job_round(const fed_site *s) {
    return s->round.rs ? s->round.rs->round : 0;
}

void fed_site_job_claim(fed_site *s) {
    int want = JOB_READY;
    atomic_compare_exchange_strong(&s->job.state, &want, JOB_RUNNING);
}

void fed_site_job_run(fed_site *s, fed_site_trainer *t) {
    if (atomic_load(&s->job.state) != JOB_RUNNING) return;
    const char *what = "";
    fed_err err = FED_OK;
    s->job.result = site_train_round(s, t, &err, &what);
    s->job.err = err;
    snprintf(s->job.what, sizeof s->job.what, "%s", what);
    snprintf(s->job.detail, sizeof s->job.detail, "%s", err ? fed_errdetail(err) : "");
    atomic_store(&s->job.state, JOB_DONE);
}

bool fed_site_job_done(const fed_site *s) {
    return atomic_load(&s->job.state) == JOB_DONE;
}

bool fed_site_job_update(const fed_site *s, const float **delta, size_t *n, uint64_t *examples) {
    *delta = NULL;
    *n = 0;
    *examples = 0;
    if (atomic_load(&s->job.state) != JOB_DONE || s->job.result != TR_OK ||
        atomic_load(&s->fit.abort))
        return false;
    *delta = s->res.delta;
    *n = s->res.delta_n;
    *examples = s->data.train->n;
    return true;
}

void fed_site_job_finish(fed_site *s) {
    if (atomic_load(&s->job.state) != JOB_DONE) return;
    atomic_store(&s->job.state, JOB_NONE);
    if (s->job.err) fed_errorf(s->job.err, "%s", s->job.detail); /* this thread's message */
    if (atomic_load(&s->fit.abort) && s->job.result == TR_OK) s->job.result = TR_ABORTED;
    site_conclude_round(s, s->job.result, s->job.err, s->job.what);
}

void fed_site_job_abort(fed_site *s, const char *why) {
    site_interrupt(s, why);
}

fed_err fed_site_trainer_new(fed_site_trainer **out) {
    *out = fed_calloc(1, sizeof **out);
    return *out ? FED_OK : FED_ENOMEM;
}

void fed_site_trainer_destroy(fed_site_trainer **t) {
    if (!t || !*t) return;
    site_trainer_clear(*t);
    fed_free(*t);
    *t = NULL;
}
