/* The site (client/client.h): data preparation, the connection loop with backoff, and
 * the round state machine idle -> receiving (the global model) -> training -> sending
 * (the delta) -> idle. Option parsing and signals live in cli/cmd_client.c; nothing
 * here prints, everything goes through core/log.h. */
#include "client/client.h"

#include "core/alloc.h"
#include "core/blas.h"
#include "core/log.h"
#include "core/model.h"
#include "dataset/moments.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "core/train_spec.h"
#include "privacy/dp.h"
#include "privacy/identity.h"
#include "privacy/secagg.h"

#include <inttypes.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef FED_VERSION
#define FED_VERSION "0.0.0"
#endif

/* fedtune.ErrorCode values (proto/fedtune.proto). */
enum {
    CODE_INVALID = 2,
    CODE_FORMAT = 3,
    CODE_RANGE = 5,
    CODE_SHAPE = 7,
    CODE_UNSUPPORTED = 8,
    CODE_DIGEST = 10,
    CODE_PROTO = 11,
    CODE_TIMEOUT = 14,
    CODE_BUSY = 101,
};

#define POLL_MS      100 /* longest wait between looks at the stop flag */
#define PUMP_S       0.1 /* during training, poll the channel this often */
#define QUEUE_MAX    32  /* events queued while training */
#define TEXT_MAX     256 /* reasons, error texts kept from an event */
#define SOFTWARE_MAX 64

/* ------------------------------------------------------------------------------------ */
/* Types                                                                                */

/* One event, owning everything it refers to (a RoundStart is deep-copied), so that
 * events polled while training can wait in the queue. */
typedef struct site_ev {
    fed_net_event_type type; /* as the channel reported it */
    uint64_t transfer_id;    /* TRANSFER_* */
    fed_err err;             /* LEFT, TRANSFER_FAILED */
    fed_msg_type msg;        /* MESSAGE: its type */
    fed_msg_round_start *rs; /* ROUND_START: owned copy */
    uint8_t *sa;             /* SECAGG: the message (owned), sa_len bytes, for round sa_round */
    size_t sa_len;
    uint64_t sa_round;
    uint32_t code;      /* ERROR: code */
    uint64_t err_round; /* ERROR: the round and attempt it is about (0: none) */
    uint64_t err_attempt;
    bool permanent;      /* LEFT: a refusal that reconnecting cannot change */
    char text[TEXT_MAX]; /* LEFT/FAILED reason, ERROR text, BYE reason, JOINED peer CN */
} site_ev;

typedef enum round_state {
    ROUND_IDLE = 0,  /* waiting for a RoundStart */
    ROUND_RECEIVING, /* the global model is arriving as rs->transfer_id */
    ROUND_TRAINING,  /* external training: the model is here, a worker trains (or will) */
    ROUND_SENDING,   /* the delta (or the masked update) leaves as transfer upload_id(rs) */
    ROUND_SHARES,    /* secure aggregation: trained, waiting for the neighbours' shares */
    ROUND_UNMASKING, /* secure aggregation: masked update sent, waiting to help unmask */
} round_state;

/* External training (fed_site_job_*): where the job of a ROUND_TRAINING round is. */
enum { JOB_NONE = 0, JOB_READY, JOB_RUNNING, JOB_DONE };

/* How a round's training ended (train_round), for conclude_round. */
typedef enum train_result {
    TR_OK = 0,    /* s->delta holds the update */
    TR_ABORTED,   /* interrupted: drop the round */
    TR_FAIL_MSG,  /* the coordinator's message is at fault: fail_round_err */
    TR_FAIL_DATA, /* the local data or training: fail_round_local(what) */
    TR_NONFINITE, /* the update is not finite */
    TR_DEADLINE,  /* the deadline came before a single step: skip the round */
} train_result;

/* A model a round trains: the site's own, or a simulator worker's (fed_site_trainer). */
struct fed_site_trainer {
    fed_model *model; /* built from arch */
    char *arch;       /* the architecture JSON it was built from */
};

static void trainer_clear(fed_site_trainer *t) {
    fed_model_destroy(&t->model);
    fed_free(t->arch);
    t->arch = NULL;
}

struct fed_site {
    /* configuration (strings owned) */
    char *endpoint;                         /* coordinator endpoint */
    char *server_name;                      /* expected certificate name */
    char *identity;                         /* plaintext (simulation): the name claimed */
    char *tls[4];                           /* ca, cert, key, crl (NULL: none) */
    fed_net_config net;                     /* with tls pointing at the copies above */
    char software[SOFTWARE_MAX];            /* Hello.software */
    size_t threads;                         /* OpenBLAS threads, 0: leave */
    size_t max_epochs, max_batch;           /* local caps, 0: none */
    char *save_updates;                     /* audit folder, or NULL */
    int backoff_initial_ms, backoff_max_ms; /* reconnect delays */
    double backoff_jitter;                  /* share of a delay cut at random */

    void *zctx;                        /* ZeroMQ context */
    bool own_zctx;                     /* made by us */
    fed_client *cli;                   /* current connection, or NULL between connections */
    fed_dataset *train;                /* local training split, prepared */
    fed_dataset *test;                 /* local test split, prepared, or NULL */
    fed_dataset *train_raw, *test_raw; /* the same before any standardisation; NULL while
                                          train/test are still raw (one copy, not two) */
    char *transform; /* the model's input transform now applied (NULL: local or none) */

    /* the global model held: weights in host order */
    float *global;                      /* (global_n) */
    size_t global_cap;                  /* floats allocated */
    size_t global_n;                    /* floats held; 0: no model */
    uint64_t global_version;            /* its model version */
    uint8_t global_sha[FED_SHA256_LEN]; /* of the little-endian bytes */
    char *global_arch;                  /* its architecture JSON */
    float *rx;                          /* receive buffer of a model transfer */
    size_t rx_cap;                      /* floats allocated */
    float *delta;                       /* the delta being sent, little-endian */
    size_t delta_cap;                   /* floats allocated */
    size_t delta_n;                     /* floats of the delta of this round */
    fed_site_trainer own;               /* the model the site trains (not external) */
    bool external;                      /* rounds are trained by fed_site_job_run */
    bool lean;                          /* free the model buffers after every round */
    fed_log_level info;                 /* level of progress lines: INFO, DEBUG when external */

    /* the round in progress */
    round_state state;       /* where the round is */
    fed_msg_round_start *rs; /* its RoundStart (owned copy), NULL when idle */
    double t_round;          /* when it started (its RoundStart arrived) */
    double t_rx;             /* when its model transfer was asked for */
    double rx_s_per_byte;    /* how long the last model transfer took per byte (0: none
                                yet): the estimate of the upload's time */
    size_t steps;            /* optimizer steps of the round's training */
    size_t examples;         /* examples it stepped over, at most the split's (the weight) */
    bool out_of_time;        /* training stopped at the deadline */
    double train_loss, train_acc, global_loss, global_acc; /* for the round's log line */

    /* secure aggregation of the round in progress (privacy/secagg.h) */
    fed_id *id;           /* the TLS identity that signs our keys, checks the neighbours';
                             NULL in plaintext mode (simulation): keys go unsigned */
    fed_sa_client *sa;    /* the protocol's client side, NULL when not securely aggregated */
    uint8_t *sa_delivery; /* the DELIVERY message, kept until the delta is ready */
    size_t sa_delivery_len;
    uint8_t *sa_masked; /* the MASKED message being sent */
    size_t sa_masked_len;

    /* training */
    site_ev queue[QUEUE_MAX];    /* events polled while training */
    size_t qhead, qlen;          /* first queued event, events queued */
    atomic_bool abort;           /* end training after this epoch (set by the I/O thread) */
    char abort_why[64];          /* why, for the log */
    double last_pump;            /* time of the last poll while training */
    bool in_fit;                 /* run_round is training on this thread */
    volatile sig_atomic_t *stop; /* the caller's stop flag, or NULL */
    fed_epoch_stats last_epoch;  /* of the current fit */

    /* external training: the job of the round, and how it ended */
    atomic_int job;          /* JOB_* */
    train_result job_result; /* when JOB_DONE */
    fed_err job_err;         /* its error */
    char job_what[64];       /* what failed (TR_FAIL_DATA) */
    char job_detail[512];    /* fed_errdetail of job_err, raised again on the I/O thread */
    size_t job_in, job_out;  /* the model's input and output sizes (for the Error text) */

    /* the connection loop (fed_site_step) */
    int attempt;         /* failed connection attempts in a row */
    double next_connect; /* when to connect again */

    fed_rng jitter;       /* reconnect jitter */
    fed_site_stats stats; /* counters */
    char errmsg[512];     /* last error of a call */
};

/* ------------------------------------------------------------------------------------ */
/* Small helpers                                                                        */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static bool stopped(const fed_site *s) {
    return s->stop && *s->stop;
}

static fed_err site_err(fed_site *s, fed_err e) {
    if (e != FED_OK) snprintf(s->errmsg, sizeof s->errmsg, "%s", fed_errdetail(e));
    return e;
}

/* Host floats <-> little-endian F32, in place (nothing to do on little-endian hosts). */
static void swap_le(float *v, size_t n) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &v[i], 4);
        u = __builtin_bswap32(u);
        memcpy(&v[i], &u, 4);
    }
#else
    (void)v;
    (void)n;
#endif
}

/* Makes *buf hold at least n floats; keeps the block when it is big enough. */
static fed_err reserve(float **buf, size_t *cap, size_t n) {
    if (*buf && *cap >= n) return FED_OK;
    fed_free(*buf);
    *cap = 0;
    *buf = fed_aligned_alloc(n ? n : 1, sizeof(float));
    if (!*buf) return FED_ENOMEM;
    *cap = n;
    return FED_OK;
}

/* "(8, 4)" */
static void shape_str(char *out, size_t len, int ndim, const uint64_t *shape) {
    size_t k = (size_t)snprintf(out, len, "(");
    for (int i = 0; i < ndim && k < len; i++)
        k += (size_t)snprintf(out + k, len - k, "%s%" PRIu64, i ? ", " : "", shape[i]);
    if (k < len) snprintf(out + k, len - k, ")");
}

/* The protocol's ErrorCode for a local error code. */
static uint32_t wire_code(fed_err e) {
    switch (e) {
    case FED_EINVAL:
    case FED_ENOTFOUND:
        return CODE_INVALID;
    case FED_EFORMAT:
        return CODE_FORMAT;
    case FED_ERANGE:
    case FED_ENONFINITE:
        return CODE_RANGE;
    case FED_ESHAPE:
        return CODE_SHAPE;
    case FED_EUNSUPPORTED:
        return CODE_UNSUPPORTED;
    case FED_EDIGEST:
        return CODE_DIGEST;
    case FED_EPROTO:
        return CODE_PROTO;
    case FED_ETIMEOUT:
        return CODE_TIMEOUT;
    default:
        return CODE_BUSY; /* out of memory, I/O: the site cannot do it now */
    }
}

/* ------------------------------------------------------------------------------------ */
/* Owned copies of RoundStart and events                                                */

static void rs_free(fed_msg_round_start **p) {
    fed_msg_round_start *r = *p;
    if (!r) return;
    *p = NULL;
    fed_free(r->config.optimizer);
    fed_free(r->manifest.arch);
    fed_free(r->manifest.input_transform);
    for (size_t i = 0; i < r->manifest.num_tensors; i++) fed_free(r->manifest.tensors[i].name);
    fed_free(r->manifest.tensors);
    fed_free(r);
}

static fed_err rs_copy(fed_msg_round_start **out, const fed_msg_round_start *src) {
    *out = NULL;
    fed_msg_round_start *r = fed_calloc(1, sizeof *r);
    if (!r) return FED_ENOMEM;
    *r = *src;
    r->config.optimizer = fed_strdup(src->config.optimizer ? src->config.optimizer : "");
    r->manifest.arch = fed_strdup(src->manifest.arch ? src->manifest.arch : "");
    r->manifest.input_transform =
        fed_strdup(src->manifest.input_transform ? src->manifest.input_transform : "");
    r->manifest.tensors = NULL;
    r->manifest.num_tensors = 0;
    if (!r->config.optimizer || !r->manifest.arch || !r->manifest.input_transform) goto fail;
    if (src->manifest.num_tensors) {
        r->manifest.tensors = fed_calloc(src->manifest.num_tensors, sizeof *r->manifest.tensors);
        if (!r->manifest.tensors) goto fail;
        for (size_t i = 0; i < src->manifest.num_tensors; i++) {
            fed_msg_tensor *t = &r->manifest.tensors[i];
            *t = src->manifest.tensors[i];
            t->name = fed_strdup(t->name ? t->name : "");
            if (!t->name) goto fail;
            r->manifest.num_tensors++;
        }
    }
    *out = r;
    return FED_OK;
fail:
    rs_free(&r);
    return FED_ENOMEM;
}

static void ev_free(site_ev *e) {
    rs_free(&e->rs);
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
        return rs_copy(&out->rs, &m->u.round_start);
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
/* Configuration                                                                        */

fed_site_config fed_site_default_config(void) {
    fed_site_config c;
    memset(&c, 0, sizeof c);
    c.net = fed_net_default_config();
    c.test_split = 0.2;
    c.seed = 1;
    c.standardize = true;
    c.threads = 1;
    c.backoff_initial_ms = 1000;
    c.backoff_max_ms = 60000;
    c.backoff_jitter = 0.5;
    c.keep_model = true;
    return c;
}

/* ------------------------------------------------------------------------------------ */
/* Construction                                                                         */

static fed_err check_config(const fed_site_config *c) {
    if (!c->coordinator || !c->coordinator[0])
        return fed_errorf(FED_EINVAL, "coordinator: the coordinator's endpoint is required");
    if (!c->server_name || !c->server_name[0])
        return fed_errorf(FED_EINVAL,
                          "server-name: the coordinator's certificate name is required");
    if (!c->net.plaintext && (!c->net.tls.ca_file || !c->net.tls.cert_file || !c->net.tls.key_file))
        return fed_errorf(FED_EINVAL, "ca, cert and key: the site's TLS files are required");
    if (c->net.plaintext && (!c->identity || !c->identity[0]))
        return fed_errorf(FED_EINVAL, "identity: a plaintext (simulated) site needs a name");
    if (!c->data && !c->dataset)
        return fed_errorf(FED_EINVAL, "data: the site's labeled data file is required");
    if (!(c->test_split >= 0.0 && c->test_split <= 0.9))
        return fed_errorf(FED_EINVAL, "test-split: %g is not in [0, 0.9]", c->test_split);
    if (c->threads > 256) return fed_errorf(FED_EINVAL, "threads: %zu is above 256", c->threads);
    if (c->backoff_initial_ms < 1 || c->backoff_max_ms < c->backoff_initial_ms)
        return fed_errorf(FED_EINVAL, "reconnect delays: need 1 <= initial (%d ms) <= max (%d ms)",
                          c->backoff_initial_ms, c->backoff_max_ms);
    if (!(c->backoff_jitter >= 0.0 && c->backoff_jitter <= 1.0))
        return fed_errorf(FED_EINVAL, "reconnect jitter: %g is not in [0, 1]", c->backoff_jitter);
    return FED_OK;
}

/* When the model brings its input standardisation (manifest.input_transform), every
 * site applies that one transform to its raw data instead of a locally fitted one, so
 * all sites and the coordinator's evaluation see one input scale. */
static fed_err use_transform(fed_site *s, const char *json) {
    if (!json || !json[0] || (s->transform && strcmp(s->transform, json) == 0)) return FED_OK;
    fed_standardizer *st = NULL;
    fed_dataset *tr = NULL, *te = NULL;
    char *copy = NULL;
    fed_err err = fed_std_from_json(&st, json);
    if (err) return fed_errprefix(err, "manifest.input_transform");
    const fed_dataset *rtr = s->train_raw ? s->train_raw : s->train;
    const fed_dataset *rte = s->train_raw ? s->test_raw : s->test;
    if ((err = fed_data_clone(&tr, rtr))) goto done;
    if (rte && (err = fed_data_clone(&te, rte))) goto done;
    if ((err = fed_std_apply(st, tr)) || (te && (err = fed_std_apply(st, te)))) {
        err = fed_errprefix(err, "manifest.input_transform");
        goto done;
    }
    if (!(copy = fed_strdup(json))) {
        err = FED_ENOMEM;
        goto done;
    }
    if (!s->train_raw) { /* the raw data move aside instead of being copied at start */
        s->train_raw = s->train;
        s->test_raw = s->test;
        s->train = s->test = NULL;
    }
    fed_data_destroy(&s->train);
    fed_data_destroy(&s->test);
    s->train = tr;
    s->test = te;
    tr = te = NULL;
    fed_free(s->transform);
    s->transform = copy;
    FED_LOG(s->info, "site: using the model's input standardisation (%zu features)", st->dim);
done:
    fed_data_destroy(&tr);
    fed_data_destroy(&te);
    fed_std_destroy(&st);
    return err;
}

/* Loads (or copies), splits and standardises the site's data. */
static fed_err prepare_data(fed_site *s, const fed_site_config *c) {
    fed_dataset *all = NULL;
    fed_standardizer *st = NULL;
    size_t *idx = NULL;
    fed_err err;
    if (c->data) {
        err = fed_data_load(&all, c->data, &c->data_opts);
    } else {
        size_t n = c->dataset->n;
        idx = fed_mallocarray(n ? n : 1, sizeof *idx);
        if (!idx) return FED_ENOMEM;
        for (size_t i = 0; i < n; i++) idx[i] = i;
        err = fed_data_subset(&all, c->dataset, idx, n);
    }
    if (err) goto done;
    err = fed_data_split(all, 0.0, c->test_split, c->seed, &s->train, NULL,
                         c->test_split > 0.0 ? &s->test : NULL);
    if (err) goto done;
    if (s->train->n == 0) {
        err = fed_errorf(FED_EINVAL, "%s: no training example left after the test split",
                         c->data ? c->data : "data");
        goto done;
    }
    if (c->standardize) {
        if ((err = fed_data_clone(&s->train_raw, s->train))) goto done;
        if (s->test && (err = fed_data_clone(&s->test_raw, s->test))) goto done;
        if ((err = fed_std_fit(&st, s->train))) goto done;
        if ((err = fed_std_apply(st, s->train))) goto done;
        if (s->test && (err = fed_std_apply(st, s->test))) goto done;
        FED_LOG(s->info,
                "site: standardised %zu features (%s mean/std fitted on the %zu local training "
                "examples)",
                st->dim, st->len == st->dim ? "per-feature" : "per-channel", s->train->n);
    }
    s->stats.train_examples = s->train->n;
    s->stats.eval_examples = s->test ? s->test->n : 0;
    s->stats.features = s->train->dim;
    s->stats.classes = all->num_classes;
    FED_LOG(s->info,
            "site: %s: %zu training + %zu test examples, %zu features, %zu classes (split seed "
            "%" PRIu64 ")",
            c->data ? c->data : "data in memory", s->stats.train_examples, s->stats.eval_examples,
            s->stats.features, s->stats.classes, c->seed);
done:
    fed_std_destroy(&st);
    fed_free(idx);
    fed_data_destroy(&all);
    return err;
}

fed_err fed_site_new(fed_site **out, const fed_site_config *cfg) {
    *out = NULL;
    fed_err err = check_config(cfg);
    if (err) return err;
    /* What would make every connection attempt fail is refused now, before the data are
     * loaded, not retried with backoff forever. */
    if (fed_net_check_endpoint(cfg->coordinator, false))
        return fed_errprefix(FED_EINVAL, "coordinator");
    fed_net_file which;
    if (!cfg->net.plaintext && fed_net_check_tls(&cfg->net.tls, false, &which)) {
        char why[512];
        snprintf(why, sizeof why, "%s", fed_errmsg());
        return fed_errorf(FED_EINVAL, "%s %s", fed_net_file_name(which), why);
    }
    fed_site *s = fed_calloc(1, sizeof *s);
    if (!s) return FED_ENOMEM;
    const char *tls[4] = {cfg->net.tls.ca_file, cfg->net.tls.cert_file, cfg->net.tls.key_file,
                          cfg->net.tls.crl_file};
    s->endpoint = fed_strdup(cfg->coordinator);
    s->server_name = fed_strdup(cfg->server_name);
    err = FED_ENOMEM;
    if (!s->endpoint || !s->server_name) goto fail;
    if (cfg->identity && !(s->identity = fed_strdup(cfg->identity))) goto fail;
    for (int i = 0; i < 4; i++)
        if (tls[i] && !(s->tls[i] = fed_strdup(tls[i]))) goto fail;
    s->net = cfg->net;
    s->net.tls.ca_file = s->tls[0];
    s->net.tls.cert_file = s->tls[1];
    s->net.tls.key_file = s->tls[2];
    s->net.tls.crl_file = s->tls[3];
    snprintf(s->software, sizeof s->software, "%s",
             cfg->software ? cfg->software : "fedtune " FED_VERSION);
    s->external = cfg->external_training;
    s->lean = !cfg->keep_model;
    s->info = s->external ? FED_LOG_DEBUG : FED_LOG_INFO; /* a simulator has thousands */
    s->threads = cfg->threads;
    s->max_epochs = cfg->max_epochs;
    s->max_batch = cfg->max_batch;
    if (cfg->save_updates && !(s->save_updates = fed_strdup(cfg->save_updates))) {
        err = FED_ENOMEM;
        goto fail;
    }
    s->backoff_initial_ms = cfg->backoff_initial_ms;
    s->backoff_max_ms = cfg->backoff_max_ms;
    s->backoff_jitter = cfg->backoff_jitter;
    atomic_init(&s->job, JOB_NONE);
    atomic_init(&s->abort, false);
    fed_rng_seed(&s->jitter,
                 (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)s);
    if ((err = prepare_data(s, cfg))) goto fail;
    if (!s->net.plaintext && (err = fed_id_new(&s->id, s->tls[1], s->tls[2], s->tls[0], s->tls[3])))
        goto fail;
    if (cfg->zmq_ctx) {
        s->zctx = cfg->zmq_ctx;
    } else {
        s->zctx = fed_net_context_new();
        if (!s->zctx) {
            err = FED_ENOMEM;
            goto fail;
        }
        s->own_zctx = true;
    }
    *out = s;
    return FED_OK;
fail:
    fed_site_destroy(&s);
    return err;
}

static void queue_clear(fed_site *s) {
    for (size_t i = 0; i < s->qlen; i++) ev_free(&s->queue[(s->qhead + i) % QUEUE_MAX]);
    s->qhead = s->qlen = 0;
}

void fed_site_destroy(fed_site **sp) {
    fed_site *s = *sp;
    if (!s) return;
    *sp = NULL;
    queue_clear(s);
    fed_client_destroy(&s->cli);
    if (s->own_zctx) fed_net_context_destroy(&s->zctx);
    rs_free(&s->rs);
    trainer_clear(&s->own);
    fed_free(s->global_arch);
    fed_free(s->global);
    fed_free(s->rx);
    fed_free(s->delta);
    fed_sa_client_destroy(&s->sa);
    fed_free(s->sa_delivery);
    fed_free(s->sa_masked);
    fed_id_destroy(&s->id);
    fed_data_destroy(&s->train);
    fed_data_destroy(&s->test);
    fed_data_destroy(&s->train_raw);
    fed_data_destroy(&s->test_raw);
    fed_free(s->transform);
    fed_free(s->save_updates);
    for (int i = 0; i < 4; i++) fed_free(s->tls[i]);
    fed_free(s->endpoint);
    fed_free(s->server_name);
    fed_free(s->identity);
    fed_free(s);
}

void fed_site_stats_get(const fed_site *s, fed_site_stats *st) {
    *st = s->stats;
    st->model_version = s->global_n ? s->global_version : 0;
}

const char *fed_site_errmsg(const fed_site *s) {
    return s->errmsg;
}

/* ------------------------------------------------------------------------------------ */
/* Talking to the coordinator                                                           */

/* Sends m; a failure to send ends the session (a LEFT event follows), so it is only
 * logged. FED_EINVAL (a message we must not send) is returned. */
static fed_err send_msg(fed_site *s, const fed_msg *m) {
    if (!s->cli) return FED_OK;
    fed_err e = fed_client_send(s->cli, m);
    if (e == FED_EINVAL) return e;
    if (e != FED_OK)
        FED_LOG(FED_LOG_DEBUG, "site: %s not sent: %s", fed_msg_type_name(m->type),
                fed_client_errmsg(s->cli));
    return FED_OK;
}

/* Sends Error{code, text}; about the round in progress (its round and attempt) when
 * about_round, else a request that is about no round. */
static void send_error(fed_site *s, uint32_t code, const char *text, bool about_round) {
    fed_msg m = {.type = FED_MSG_ERROR};
    m.u.error.code = code;
    m.u.error.text = (char *)text;
    if (about_round && s->rs) {
        m.u.error.round = s->rs->round;
        m.u.error.attempt = s->rs->attempt;
    }
    if (send_msg(s, &m) != FED_OK)
        FED_LOG(FED_LOG_WARN, "site: could not send Error: %s", fed_errmsg());
}

/* The transfer id of the round's upload: one per attempt, since a channel's transfer ids
 * must never be reused (the attempt wraps after 65 536 retries of one round). */
static uint64_t upload_id(const fed_msg_round_start *rs) {
    return rs->round << 16 | (rs->attempt & 0xffffu);
}

/* Cancels a transfer of ours; one that already ended is no matter. */
static void cancel(fed_site *s, uint64_t id) {
    if (fed_client_cancel_transfer(s->cli, id) != FED_OK)
        FED_LOG(FED_LOG_DEBUG, "site: transfer %" PRIu64 ": nothing to cancel", id);
}

/* Lean sites (simulation) keep no model between rounds: the buffers go, and the next
 * round receives the weights again (every round brings a new version anyway). */
static void release_buffers(fed_site *s) {
    fed_free(s->global);
    fed_free(s->rx);
    fed_free(s->delta);
    s->global = s->rx = s->delta = NULL;
    s->global_cap = s->rx_cap = s->delta_cap = 0;
    s->global_n = 0;
}

static void on_secagg(fed_site *s, uint64_t round, const uint8_t *msg, size_t len);
static fed_err sa_send_masked(fed_site *s);

/* Forgets the secure aggregation of the round (its secrets are wiped). */
static void sa_clear(fed_site *s) {
    fed_sa_client_destroy(&s->sa);
    fed_free(s->sa_delivery);
    fed_free(s->sa_masked);
    s->sa_delivery = s->sa_masked = NULL;
    s->sa_delivery_len = s->sa_masked_len = 0;
}

/* Forgets the round in progress, cancelling its transfers. */
static void end_round(fed_site *s) {
    if (s->cli && s->rs) {
        if (s->state == ROUND_RECEIVING && s->rs->transfer_id) cancel(s, s->rs->transfer_id);
        if (s->state == ROUND_SENDING) cancel(s, upload_id(s->rs));
    }
    s->state = ROUND_IDLE;
    atomic_store(&s->job, JOB_NONE);
    rs_free(&s->rs);
    sa_clear(s);
    if (s->lean) release_buffers(s);
}

/* Drops the round in progress. An upload the coordinator may be receiving is cancelled,
 * and the coordinator told so (tell), so that it counts the site out of the attempt
 * instead of waiting for the rest until its deadline. */
static void drop_round_tell(fed_site *s, const char *why, bool tell) {
    if (!s->rs) return;
    FED_LOG(s->info, "site: round %" PRIu64 " dropped: %s", s->rs->round, why);
    if (tell && s->state == ROUND_SENDING) {
        char text[TEXT_MAX];
        snprintf(text, sizeof text, "upload cancelled: %s", why);
        send_error(s, CODE_INVALID, text, true);
    }
    s->stats.rounds_dropped++;
    end_round(s);
}

static void drop_round(fed_site *s, const char *why) {
    drop_round_tell(s, why, true);
}

/* A round that cannot be done: one warn line with the local detail, Error{code, text}
 * to the coordinator (text must hold nothing about individual examples). */
static void fail_round(fed_site *s, uint32_t code, const char *text) {
    uint64_t round = s->rs ? s->rs->round : 0;
    FED_LOG(FED_LOG_WARN, "site: round %" PRIu64 " failed: %s", round, fed_errmsg());
    send_error(s, code, text, true);
    s->stats.rounds_failed++;
    end_round(s);
}

/* fail_round for an error whose detail is about the coordinator's own message (safe to
 * send back as it is). */
static void fail_round_err(fed_site *s, fed_err e) {
    char text[TEXT_MAX];
    snprintf(text, sizeof text, "%s", fed_errdetail(e));
    fail_round(s, wire_code(e), text);
}

/* fail_round for an error raised by the local data: only the class of error and the
 * data's shape go back. */
static void fail_round_local(fed_site *s, fed_err e, const char *what) {
    char text[TEXT_MAX];
    if (e == FED_ESHAPE && s->job_in)
        snprintf(text, sizeof text,
                 "%s: the local data (%zu features, %zu classes) do not fit the model (%zu "
                 "inputs, %zu outputs)",
                 what, s->stats.features, s->stats.classes, s->job_in, s->job_out);
    else
        snprintf(text, sizeof text, "%s: %s", what, fed_strerror(e));
    fail_round(s, wire_code(e), text);
}

/* ------------------------------------------------------------------------------------ */
/* Events: polled now, or queued while training                                         */

static fed_err enqueue(fed_site *s, const fed_net_event *ev) {
    site_ev *slot = &s->queue[(s->qhead + s->qlen) % QUEUE_MAX];
    fed_err e = ev_take(slot, ev);
    if (e) {
        ev_free(slot);
        return e;
    }
    s->qlen++;
    return FED_OK;
}

/* The next event: queued ones first, then the channel (waiting up to timeout_ms). A
 * poll failure is reported as a LEFT event: the connection is unusable. */
static fed_err next_event(fed_site *s, int timeout_ms, site_ev *out) {
    memset(out, 0, sizeof *out);
    if (s->qlen) {
        *out = s->queue[s->qhead];
        memset(&s->queue[s->qhead], 0, sizeof s->queue[s->qhead]);
        s->qhead = (s->qhead + 1) % QUEUE_MAX;
        s->qlen--;
        return FED_OK;
    }
    fed_net_event ev;
    fed_err e = fed_client_poll(s->cli, timeout_ms, &ev);
    if (e != FED_OK) {
        out->type = FED_NET_LEFT;
        out->err = e;
        snprintf(out->text, sizeof out->text, "%s", fed_client_errmsg(s->cli));
        return FED_OK;
    }
    return ev_take(out, &ev);
}

/* Ends training after the current epoch; the first reason is kept. Called by the
 * thread that owns the site (the worker reads the flag, never the reason). */
static void interrupt(fed_site *s, const char *why) {
    if (!atomic_load(&s->abort)) snprintf(s->abort_why, sizeof s->abort_why, "%s", why);
    atomic_store(&s->abort, true);
}

/* While training: does the channel's I/O (heartbeats, credits) and queues what it
 * reports. Anything that makes the round pointless ends training after this epoch. */
static void pump(fed_site *s) {
    while (s->cli && s->qlen < QUEUE_MAX) {
        fed_net_event ev;
        fed_err e = fed_client_poll(s->cli, 0, &ev);
        if (e != FED_OK) {
            fed_net_event left = {
                .type = FED_NET_LEFT, .cn = "", .err = e, .reason = "poll failed"};
            (void)enqueue(s, &left);
            interrupt(s, "the connection failed");
            return;
        }
        if (ev.type == FED_NET_NONE) return;
        if (ev.type == FED_NET_MESSAGE && ev.msg->type == FED_MSG_SECAGG) {
            on_secagg(s, ev.msg->u.secagg.round, ev.msg->u.secagg.msg, ev.msg->u.secagg.len);
            continue;
        }
        if (ev.type == FED_NET_MESSAGE && ev.msg->type == FED_MSG_ERROR) {
            /* Not about this round: its Update is not sent yet. */
            FED_LOG(FED_LOG_WARN, "site: the coordinator reports error %" PRIu32 ": %s",
                    ev.msg->u.error.code, ev.msg->u.error.text);
            continue;
        }
        if (enqueue(s, &ev) != FED_OK) {
            interrupt(s, "out of memory");
            return;
        }
        if (ev.type == FED_NET_LEFT) {
            interrupt(s, "the connection ended");
        } else if (ev.type == FED_NET_MESSAGE && ev.msg->type == FED_MSG_BYE) {
            interrupt(s, "the coordinator says goodbye");
        } else if (ev.type == FED_NET_MESSAGE && ev.msg->type == FED_MSG_ROUND_START) {
            char why[64];
            snprintf(why, sizeof why, "round %" PRIu64 " started", ev.msg->u.round_start.round);
            interrupt(s, why);
        }
    }
    if (s->qlen >= QUEUE_MAX) interrupt(s, "too many events while training");
}

static void on_step(void *user, size_t done, size_t total) {
    (void)done;
    (void)total;
    fed_site *s = user;
    if (s->external) return; /* the I/O thread pumps; the worker only reads abort */
    if (stopped(s)) interrupt(s, "stopping");
    if (atomic_load(&s->abort)) return;
    double t = now_s();
    if (t - s->last_pump < PUMP_S) return;
    s->last_pump = t;
    pump(s);
}

static bool on_epoch(void *user, const fed_epoch_stats *e) {
    fed_site *s = user;
    s->last_epoch = *e;
    if (!s->external && stopped(s)) interrupt(s, "stopping");
    return !atomic_load(&s->abort);
}

/* ------------------------------------------------------------------------------------ */
/* A round                                                                              */

/* Builds the model from the manifest's architecture (when it changed) and checks every
 * tensor of the manifest against it; sets the trainable flags. Errors name the field. */
static fed_err prepare_model(fed_site *s, fed_site_trainer *tr) {
    const fed_msg_manifest *mf = &s->rs->manifest;
    fed_err err;
    if (!tr->model || strcmp(tr->arch, mf->arch) != 0) {
        trainer_clear(tr);
        fed_arch *a = NULL;
        if (fed_arch_parse(&a, mf->arch) != FED_OK)
            return fed_errprefix(FED_EFORMAT, "manifest.arch");
        err = fed_model_new(&tr->model, a);
        fed_arch_destroy(&a);
        if (err) return err;
        if (!(tr->arch = fed_strdup(mf->arch))) {
            fed_model_destroy(&tr->model);
            return FED_ENOMEM;
        }
        if (!s->external)
            FED_LOG(s->info, "site: model of %zu parameters in %zu tensors",
                    fed_model_num_params(tr->model), fed_model_num_tensors(tr->model));
    }
    fed_model *m = tr->model;
    size_t nt = fed_model_num_tensors(m);
    if (mf->num_tensors != nt)
        return fed_errorf(FED_ESHAPE, "manifest.tensors: %zu tensors; the architecture has %zu",
                          mf->num_tensors, nt);
    size_t ntrain = 0;
    for (size_t i = 0; i < nt; i++) {
        const fed_tensor *t = fed_model_tensor(m, i);
        const fed_msg_tensor *mt = &mf->tensors[i];
        if (strcmp(mt->name, t->name) != 0)
            return fed_errorf(FED_ESHAPE,
                              "manifest.tensors[%zu]: \"%s\" where the architecture has \"%s\"", i,
                              mt->name, t->name);
        if (mt->dtype != FED_DTYPE_F32)
            return fed_errorf(FED_EUNSUPPORTED, "manifest.tensors[%zu] (%s): dtype is not F32", i,
                              mt->name);
        uint64_t want[4];
        for (int d = 0; d < t->ndim; d++) want[d] = t->shape[d];
        bool same = mt->ndim == t->ndim;
        for (int d = 0; same && d < t->ndim; d++) same = mt->shape[d] == want[d];
        if (!same) {
            char got[160], exp[160];
            shape_str(got, sizeof got, mt->ndim, mt->shape);
            shape_str(exp, sizeof exp, t->ndim, want);
            return fed_errorf(FED_ESHAPE,
                              "manifest.tensors[%zu] (%s): shape %s; the architecture says %s", i,
                              mt->name, got, exp);
        }
        if (mt->trainable) ntrain++;
    }
    size_t np = fed_model_num_params(m);
    if (mf->total_bytes != (uint64_t)np * 4u)
        return fed_errorf(FED_ESHAPE,
                          "manifest.total_bytes: %" PRIu64 "; the architecture has %zu bytes",
                          mf->total_bytes, np * 4u);
    if (ntrain == 0) return fed_errorf(FED_EINVAL, "manifest.tensors: no trainable tensor");
    for (size_t i = 0; i < nt; i++) fed_model_set_trainable(m, i, mf->tensors[i].trainable);
    return FED_OK;
}

/* The site's own record of what leaves it: the delta of every trainable tensor (host
 * order, before the byte swap), with the round, model version and example count. */
static fed_err save_update(fed_site *s, const fed_model *m, const fed_msg_round_start *rs,
                           const float *delta) {
    size_t n = 0, off = 0;
    for (size_t i = 0; i < fed_model_num_tensors(m); i++) n += fed_model_tensor(m, i)->trainable;
    fed_st_entry *e = fed_calloc(n ? n : 1, sizeof *e);
    fed_meta *meta = NULL;
    fed_err err = FED_ENOMEM;
    if (!e || (err = fed_meta_new(&meta))) goto done;
    n = 0;
    for (size_t i = 0; i < fed_model_num_tensors(m); i++) {
        const fed_tensor *t = fed_model_tensor(m, i);
        if (!t->trainable) continue;
        e[n].name = t->name;
        e[n].ndim = t->ndim;
        e[n].shape = t->shape;
        e[n].data = delta + off;
        off += t->numel;
        n++;
    }
    char buf[32], path[4096];
    snprintf(buf, sizeof buf, "%" PRIu64, rs->round);
    if ((err = fed_meta_set(meta, "fedtune.round", buf))) goto done;
    snprintf(buf, sizeof buf, "%" PRIu64, rs->model_version);
    if ((err = fed_meta_set(meta, "fedtune.model_version", buf))) goto done;
    snprintf(buf, sizeof buf, "%zu", s->train->n);
    if ((err = fed_meta_set(meta, "fedtune.examples", buf))) goto done;
    snprintf(path, sizeof path, "%s/round-%06" PRIu64 ".safetensors", s->save_updates, rs->round);
    err = fed_st_write(path, e, n, meta);
done:
    fed_meta_destroy(&meta);
    fed_free(e);
    return err;
}

/* The least time kept for sending an update before the round's deadline. */
#define UPLOAD_MARGIN_MIN_S 0.1

/* When training must stop for the update to reach the coordinator before the round's
 * deadline: deadline_ms after the RoundStart arrived, less a margin for the upload of
 * nfloats (twice the last model transfer's time for that many bytes, at least a tenth
 * of the deadline and UPLOAD_MARGIN_MIN_S). 0: the round gives no deadline. */
static double train_deadline(const fed_site *s, size_t nfloats) {
    const fed_msg_round_start *rs = s->rs;
    if (!rs->deadline_ms) return 0;
    double window = (double)rs->deadline_ms / 1000.0;
    double margin = 2.0 * s->rx_s_per_byte * 4.0 * (double)nfloats;
    if (margin < 0.1 * window) margin = 0.1 * window;
    if (margin < UPLOAD_MARGIN_MIN_S) margin = UPLOAD_MARGIN_MIN_S;
    return s->t_round + window - margin;
}

/* Evaluates the global model, trains and computes the delta into s->delta (host order):
 * everything of a round but the messages, so that a simulator's worker thread may run
 * it while the site's own thread only pumps the channel. Touches the round's RoundStart,
 * the global weights, the data, the delta and the metrics; never the connection. On
 * TR_FAIL_* *err and *what say what failed (the error detail is on this thread). */
static train_result train_round(fed_site *s, fed_site_trainer *t, fed_err *err, const char **what) {
    fed_msg_round_start *rs = s->rs;
    *what = "";
    if ((*err = prepare_model(s, t))) return TR_FAIL_MSG;
    fed_model *m = t->model;
    s->job_in = fed_model_input_size(m);
    s->job_out = fed_model_output_size(m);
    const size_t np = fed_model_num_params(m);
    memcpy(fed_model_params(m), s->global, np * sizeof(float));
    if ((*err = use_transform(s, rs->manifest.input_transform))) {
        *what = "input transform";
        return TR_FAIL_DATA;
    }

    /* Federated evaluation of the global model, on the local test split. */
    fed_loss_config loss = {FED_LOSS_SOFTMAX_CE, 0.0f};
    s->global_loss = s->global_acc = 0.0;
    size_t neval = s->test ? s->test->n : 0;
    if (neval) {
        fed_eval_result er;
        memset(&er, 0, sizeof er);
        *err = fed_evaluate(m, s->test, 0, &loss, &er);
        s->global_loss = er.loss;
        s->global_acc = er.accuracy;
        fed_eval_result_free(&er);
        if (*err) {
            *what = "evaluating the global model";
            return TR_FAIL_DATA;
        }
    }

    fed_fit_config fc;
    if ((*err = fed_train_spec_fit(&rs->config, rs->round, s->max_epochs, s->max_batch, &fc)))
        return TR_FAIL_MSG;
    if (fc.epochs != rs->config.epochs || fc.batch != rs->config.batch)
        FED_LOG(s->info,
                "site: round %" PRIu64 ": local caps: epochs %" PRIu32 " -> %zu, batch %" PRIu32
                " -> %zu",
                rs->round, rs->config.epochs, fc.epochs, rs->config.batch, fc.batch);
    fc.on_step = on_step;
    fc.on_epoch = on_epoch;
    fc.user = s;
    fc.stop_at = train_deadline(s, fed_model_num_trainable(m));
    s->last_pump = now_s();
    memset(&s->last_epoch, 0, sizeof s->last_epoch);
    fed_fit_result fr;
    *err = fed_fit(m, s->train, NULL, &fc, &fr);
    if (atomic_load(&s->abort)) return TR_ABORTED;
    if (*err) {
        *what = "local training";
        return TR_FAIL_DATA;
    }
    s->steps = fr.steps;
    s->out_of_time = fr.out_of_time;
    s->examples = fr.examples < s->train->n ? fr.examples : s->train->n;
    if (fr.out_of_time && fr.steps == 0) {
        *err = fed_errorf(FED_ETIMEOUT,
                          "deadline: no training step fitted in the %.3g s the round allows "
                          "(less the upload's margin)",
                          (double)rs->deadline_ms / 1000.0);
        return TR_DEADLINE;
    }
    if (fr.out_of_time)
        FED_LOG(s->info,
                "site: round %" PRIu64 ": training stopped at the deadline after %zu steps "
                "(%zu examples); sending what it has",
                rs->round, fr.steps, s->examples);
    s->train_loss = fr.final_train_loss;
    s->train_acc = s->last_epoch.train_acc;

    /* delta = local - global over the trainable tensors, in manifest order. */
    size_t nd = fed_model_num_trainable(m);
    if ((*err = reserve(&s->delta, &s->delta_cap, nd))) {
        *what = "delta";
        return TR_FAIL_DATA;
    }
    const float *p = fed_model_params_const(m), *g = s->global;
    size_t k = 0;
    bool finite = true;
    for (size_t i = 0; i < fed_model_num_tensors(m); i++) {
        const fed_tensor *tt = fed_model_tensor(m, i);
        if (!tt->trainable) continue;
        for (size_t j = 0; j < tt->numel; j++) {
            float d = p[tt->offset + j] - g[tt->offset + j];
            if (!isfinite(d)) finite = false;
            s->delta[k++] = d;
        }
    }
    s->delta_n = nd;
    if (!finite) {
        *err = fed_errorf(FED_ENONFINITE, "the local update is not finite");
        return TR_NONFINITE;
    }
    if (s->save_updates && (*err = save_update(s, m, rs, s->delta))) {
        *what = "saving the update";
        return TR_FAIL_DATA;
    }
    return TR_OK;
}

/* Sends the round's Update (the metrics of training and of the global model) announcing
 * `bytes` (len bytes, encoded as enc) as transfer `round`, then the transfer. */
static fed_err send_update(fed_site *s, fed_encoding enc, const void *bytes, uint64_t len) {
    const fed_msg_round_start *rs = s->rs;
    fed_msg_metric metrics[7] = {
        {"train_loss", s->train_loss},
        {"train_accuracy", s->train_acc},
        {"global_loss", s->global_loss},
        {"global_accuracy", s->global_acc},
        {"eval_examples", (double)(s->test ? s->test->n : 0)},
        {"steps", (double)s->steps},
        {"out_of_time", s->out_of_time ? 1.0 : 0.0},
    };
    fed_msg msg = {.type = FED_MSG_UPDATE};
    fed_msg_update *u = &msg.u.update;
    u->round = rs->round;
    u->model_version = rs->model_version;
    u->examples = s->examples;
    u->metrics = metrics;
    u->num_metrics = rs->stats ? 0 : 7; /* the statistics round trains nothing */
    u->encoding = enc;
    u->transfer_id = upload_id(rs);
    u->total_bytes = len;
    u->attempt = rs->attempt;
    fed_sha256(bytes, (size_t)len, u->sha256);
    fed_err err = send_msg(s, &msg);
    if (!err) err = fed_client_send_transfer(s->cli, u->transfer_id, bytes, len);
    if (!err) s->state = ROUND_SENDING;
    return err;
}

/* Sends the Update and the delta of a trained round (securely aggregated: the masked
 * update, once the neighbours' shares are here). */
static void send_round(fed_site *s) {
    fed_msg_round_start *rs = s->rs;
    if (rs->has_secagg) {
        if (!s->sa) { /* the key exchange failed while we trained: reported then */
            drop_round(s, "secure aggregation failed");
            return;
        }
        if (!s->sa_delivery) {
            s->state = ROUND_SHARES; /* on_secagg sends it when DELIVERY comes */
            return;
        }
        fed_err err = sa_send_masked(s);
        if (err) fail_round_err(s, err);
        return;
    }
    swap_le(s->delta, s->delta_n);
    fed_err err = send_update(s, rs->stats ? FED_ENCODING_MOMENTS_F32 : FED_ENCODING_DELTA_F32,
                              s->delta, (uint64_t)s->delta_n * 4u);
    if (err) fail_round_err(s, err);
}

/* ------------------------------------------------------------------------------------ */
/* Secure aggregation (privacy/secagg.h): the coordinator learns only the sum            */

/* Floats of the manifest's trainable tensors: the length of the round's update. */
static size_t manifest_trainable(const fed_msg_manifest *mf) {
    uint64_t n = 0, b = 0;
    for (size_t i = 0; i < mf->num_tensors; i++)
        if (mf->tensors[i].trainable && fed_msg_tensor_bytes(&mf->tensors[i], &b)) n += b / 4u;
    return (size_t)n;
}

static fed_err sa_send(fed_site *s, const uint8_t *msg, size_t len) {
    fed_msg m = {.type = FED_MSG_SECAGG};
    m.u.secagg.round = s->rs->round;
    m.u.secagg.msg = (uint8_t *)(uintptr_t)msg; /* only read by the encoder */
    m.u.secagg.len = len;
    return send_msg(s, &m);
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

/* RoundStart with secagg: fresh keys, signed with our certificate's key, advertised at
 * once (the key exchange overlaps the model transfer and the training). */
static fed_err sa_start(fed_site *s) {
    const fed_msg_round_start *rs = s->rs;
    const fed_msg_secagg_params *m = &rs->secagg;
    fed_sa_params p = {.n = m->n,
                       .degree = m->degree,
                       .threshold = m->threshold,
                       .clip_range = m->clip_range,
                       .quant_range = m->quant_range,
                       .len = rs->stats ? s->delta_n : manifest_trainable(&rs->manifest),
                       .round = rs->round};
    memcpy(p.graph_seed, m->graph_seed, sizeof p.graph_seed);
    fed_err err = fed_sa_params_check(&p);
    if (err) return fed_errprefix(err, "round_start.secagg");
    if ((err = fed_sa_client_new(&s->sa, &p, m->participant))) return err;
    uint8_t block[FED_SA_SIGNED_LEN], sig[FED_ID_BLOB_MAX];
    size_t sig_len = 0;
    fed_sa_client_keys_to_sign(s->sa, block);
    if (s->id && (err = fed_id_sign(s->id, block, sizeof block, sig, sizeof sig, &sig_len)))
        return err;
    uint8_t *out = NULL;
    size_t len = 0;
    if ((err = fed_sa_client_advertise(s->sa, sig, sig_len, &out, &len))) return err;
    err = sa_send(s, out, len);
    fed_free(out);
    return err;
}

/* The delta is ready and the neighbours' shares are here: clip (and noise) it for
 * differential privacy, mask it, and send the MASKED message as the round's Update. */
static fed_err sa_send_masked(fed_site *s) {
    const fed_msg_round_start *rs = s->rs;
    fed_err err = FED_OK;
    if (rs->secagg.dp_clip > 0 &&
        (err = fed_dp_clip(s->delta, s->delta_n, rs->secagg.dp_clip, NULL, NULL)))
        return err;
    if (rs->secagg.dp_noise_std > 0) {
        uint8_t key[32];
        if (!(err = fed_sa_random_bytes(key, sizeof key)))
            err =
                fed_dp_add_gaussian(s->delta, s->delta_n, rs->secagg.dp_noise_std, key, rs->round);
        fed_sa_wipe(key, sizeof key);
        if (err) return err;
    }
    fed_free(s->sa_masked);
    s->sa_masked = NULL;
    err = fed_sa_client_mask(s->sa, s->sa_delivery, s->sa_delivery_len, s->delta, s->delta_n, NULL,
                             &s->sa_masked, &s->sa_masked_len);
    fed_sa_wipe(s->delta, s->delta_n * sizeof(float)); /* only the masked form stays */
    if (err) return err;
    return send_update(s, FED_ENCODING_SECAGG_MASKED, s->sa_masked, s->sa_masked_len);
}

static void round_done(fed_site *s);

/* A secure-aggregation message of the coordinator. Handled at once, even while the
 * round trains (the key exchange runs alongside); a failure fails the round (training
 * in progress stops after its epoch). */
static void on_secagg(fed_site *s, uint64_t round, const uint8_t *msg, size_t len) {
    if (!s->sa || !s->rs || round != s->rs->round || len == 0) {
        FED_LOG(FED_LOG_DEBUG, "site: secagg message for round %" PRIu64 " ignored", round);
        return;
    }
    uint8_t *out = NULL;
    size_t out_len = 0;
    fed_err err = FED_OK;
    switch (msg[0]) {
    case FED_SA_MSG_NEIGHBOURS: {
        sa_verify_ctx v = {.id = s->id, .cap = s->rs->secagg.n};
        if (s->id && !(v.cn = fed_mallocarray(v.cap, sizeof *v.cn))) {
            err = FED_ENOMEM;
            break;
        }
        err = fed_sa_client_share(s->sa, msg, len, s->id ? sa_verify : NULL, &v, &out, &out_len);
        fed_free(v.cn);
        if (!err) err = sa_send(s, out, out_len);
        break;
    }
    case FED_SA_MSG_DELIVERY:
        if (s->sa_delivery) {
            err = fed_errorf(FED_EPROTO, "secagg: a second DELIVERY for round %" PRIu64, round);
            break;
        }
        if (!(s->sa_delivery = fed_malloc(len))) {
            err = FED_ENOMEM;
            break;
        }
        memcpy(s->sa_delivery, msg, len);
        s->sa_delivery_len = len;
        if (s->state == ROUND_SHARES) err = sa_send_masked(s);
        break;
    case FED_SA_MSG_UNMASK_REQUEST:
        if (s->state != ROUND_UNMASKING) {
            err = fed_errorf(FED_EPROTO,
                             "secagg: UNMASK_REQUEST before our masked update was delivered");
            break;
        }
        err = fed_sa_client_unmask(s->sa, msg, len, &out, &out_len);
        if (!err) err = sa_send(s, out, out_len);
        if (!err) {
            fed_free(out);
            round_done(s);
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
    int job = atomic_load(&s->job);
    if (s->in_fit || job == JOB_RUNNING) { /* training still reads the round: stop it */
        fed_sa_client_destroy(&s->sa);
        char text[TEXT_MAX];
        snprintf(text, sizeof text, "%s", fed_errdetail(err));
        send_error(s, wire_code(err), text, true);
        s->stats.rounds_failed++;
        interrupt(s, "secure aggregation failed");
        return;
    }
    fail_round_err(s, err);
}

/* On the site's own thread, after train_round: send, drop or fail the round. */
static void conclude_round(fed_site *s, train_result r, fed_err err, const char *what) {
    switch (r) {
    case TR_OK:
        send_round(s);
        return;
    case TR_ABORTED:
        drop_round(s, s->abort_why[0] ? s->abort_why : "interrupted");
        return;
    case TR_FAIL_MSG:
        fail_round_err(s, err);
        return;
    case TR_FAIL_DATA:
        fail_round_local(s, err, what);
        return;
    case TR_NONFINITE:
        fail_round(s, CODE_RANGE, "local training: the update is not finite");
        return;
    case TR_DEADLINE:
        fail_round_err(s, err); /* skips the round: the detail says why */
        return;
    }
}

/* Trains the round on this thread with the site's own model, then concludes it. */
static void run_round(fed_site *s) {
    atomic_store(&s->abort, false);
    s->abort_why[0] = '\0';
    const char *what = "";
    fed_err err = FED_OK;
    s->in_fit = true;
    train_result r = train_round(s, &s->own, &err, &what);
    s->in_fit = false;
    conclude_round(s, r, err, what);
}

/* The global model is in s->global: check nothing more, train. */
static void have_model(fed_site *s) {
    if (s->rs->transfer_id) {
        /* The received buffer becomes the global model; the old one receives next. */
        float *t = s->global;
        size_t c = s->global_cap;
        s->global = s->rx;
        s->global_cap = s->rx_cap;
        s->rx = t;
        s->rx_cap = c;
        s->global_n = (size_t)(s->rs->manifest.total_bytes / 4u);
        if (s->global_n)
            s->rx_s_per_byte = (now_s() - s->t_rx) / (double)s->rs->manifest.total_bytes;
        swap_le(s->global, s->global_n);
        s->global_version = s->rs->model_version;
        memcpy(s->global_sha, s->rs->manifest.sha256, FED_SHA256_LEN);
        fed_free(s->global_arch);
        s->global_arch = fed_strdup(s->rs->manifest.arch);
        if (!s->global_arch) s->global_n = 0; /* cannot describe it: do not claim it */
        FED_LOG(FED_LOG_DEBUG, "site: received model version %" PRIu64 " (%zu parameters)",
                s->global_version, s->global_n);
    }
    if (s->external) { /* a worker trains it: fed_site_job_* */
        s->state = ROUND_TRAINING;
        atomic_store(&s->abort, false);
        s->abort_why[0] = '\0';
        atomic_store(&s->job, JOB_READY);
        return;
    }
    s->state = ROUND_IDLE;
    run_round(s);
}

/* The input groups, inputs and outputs of the manifest's architecture: what the
 * statistics round's moments are taken over (one group per channel of an image input,
 * else per feature, as fed_std_fit does). */
static fed_err manifest_groups(const fed_msg_manifest *mf, size_t *groups, size_t *inputs,
                               size_t *outputs) {
    fed_arch *a = NULL;
    if (fed_arch_parse(&a, mf->arch) != FED_OK) return fed_errprefix(FED_EFORMAT, "manifest.arch");
    fed_shape in = fed_arch_input_shape(a), out = fed_arch_shape_at(a, fed_arch_num_layers(a));
    *inputs = fed_shape_numel(&in);
    *outputs = fed_shape_numel(&out);
    *groups = fed_std_groups(&in, *inputs);
    fed_arch_destroy(&a);
    return FED_OK;
}

/* The statistics round (RoundStart.stats, before round 1 of a model without an input
 * transform): the exact moments of the raw training split in the groups of the model's
 * input (core/moments.h) are the round's update, plain or masked when securely
 * aggregated. No weights, no training: the coordinator fits one standardizer for the
 * whole federation from the sum. */
static void stats_round(fed_site *s) {
    const fed_msg_round_start *rs = s->rs;
    size_t groups = 0, inputs = 0, outputs = 0;
    fed_err err = manifest_groups(&rs->manifest, &groups, &inputs, &outputs);
    if (err) {
        fail_round_err(s, err);
        return;
    }
    const fed_dataset *raw = s->train_raw ? s->train_raw : s->train;
    if (raw->dim != inputs) {
        s->job_in = inputs;
        s->job_out = outputs;
        fed_errorf(FED_ESHAPE, "statistics: the data have %zu features, the model takes %zu",
                   raw->dim, inputs);
        fail_round_local(s, FED_ESHAPE, "statistics");
        return;
    }
    size_t len = fed_mom_len(groups);
    if ((err = reserve(&s->delta, &s->delta_cap, len))) {
        fail_round_local(s, err, "statistics");
        return;
    }
    if ((err = fed_mom_encode(raw, groups, s->delta))) { /* the detail stays here */
        fail_round_local(s, err, "statistics");
        return;
    }
    s->delta_n = len;
    s->examples = raw->n;
    s->steps = 0;
    s->out_of_time = false;
    FED_LOG(s->info, "site: statistics round: moments of %zu raw training examples in %zu groups",
            raw->n, groups);
    if (rs->has_secagg && (err = sa_start(s))) {
        fail_round_err(s, err);
        return;
    }
    send_round(s);
}

static void on_round_start(fed_site *s, site_ev *ev) {
    if (s->rs) {
        char why[64];
        snprintf(why, sizeof why, "round %" PRIu64 " started", ev->rs->round);
        drop_round(s, why);
    }
    s->rs = ev->rs;
    ev->rs = NULL;
    s->t_round = s->t_rx = now_s();
    s->stats.last_round = s->rs->round;
    const fed_msg_round_start *rs = s->rs;
    FED_LOG(FED_LOG_DEBUG, "site: round %" PRIu64 " starts from model version %" PRIu64, rs->round,
            rs->model_version);
    if (rs->stats) {
        stats_round(s);
        return;
    }
    fed_err err;
    if (!s->external && (err = prepare_model(s, &s->own))) { /* external: when trained */
        fail_round_err(s, err);
        return;
    }
    if (rs->transfer_id) {
        size_t n = (size_t)(rs->manifest.total_bytes / 4u);
        if ((err = reserve(&s->rx, &s->rx_cap, n))) {
            fail_round_err(s, err);
            return;
        }
        err = fed_client_recv_transfer(s->cli, rs->transfer_id, s->rx, rs->manifest.total_bytes,
                                       rs->manifest.sha256);
        if (!err && rs->has_secagg) err = sa_start(s); /* overlaps the transfer */
        if (err) {
            fail_round_err(s, err);
            return;
        }
        s->state = ROUND_RECEIVING;
        return;
    }
    if (!s->global_n || memcmp(s->global_sha, rs->manifest.sha256, FED_SHA256_LEN) != 0 ||
        (uint64_t)s->global_n * 4u != rs->manifest.total_bytes ||
        strcmp(s->global_arch, rs->manifest.arch) != 0) {
        char text[64];
        snprintf(text, sizeof text, "no model version %" PRIu64, rs->model_version);
        FED_LOG(s->info, "site: round %" PRIu64 ": %s held; asking for it", rs->round, text);
        send_error(s, CODE_INVALID, text, false); /* a request, not a failed round */
        s->stats.rounds_failed++;
        end_round(s);
        return;
    }
    /* Keys only now: a site asking for the model again gets a second RoundStart. */
    if (rs->has_secagg && (err = sa_start(s))) {
        fail_round_err(s, err);
        return;
    }
    have_model(s);
}

static void on_transfer_done(fed_site *s, const site_ev *ev) {
    if (s->state != ROUND_RECEIVING || !s->rs || ev->transfer_id != s->rs->transfer_id) {
        FED_LOG(FED_LOG_DEBUG, "site: transfer %" PRIu64 " arrived unasked", ev->transfer_id);
        return;
    }
    have_model(s);
}

static void on_transfer_failed(fed_site *s, const site_ev *ev) {
    if (s->state != ROUND_RECEIVING || !s->rs || ev->transfer_id != s->rs->transfer_id) return;
    fed_errorf(FED_EDIGEST, "the model transfer failed: %s", ev->text);
    s->state = ROUND_IDLE; /* the channel released the buffer: nothing to cancel */
    fail_round(s, CODE_DIGEST, "the model transfer did not match manifest.sha256");
}

static void on_transfer_sent(fed_site *s, const site_ev *ev) {
    if (s->state != ROUND_SENDING || !s->rs || ev->transfer_id != upload_id(s->rs)) return;
    if (s->sa) { /* securely aggregated: the round ends once we helped unmask the sum */
        fed_free(s->sa_masked);
        s->sa_masked = NULL;
        s->state = ROUND_UNMASKING;
        return;
    }
    round_done(s);
}

/* The round's contribution is complete: its log line, and back to idle. */
static void round_done(fed_site *s) {
    const fed_msg_round_start *rs = s->rs;
    if (rs->stats) {
        FED_LOG(s->info, "site: statistics of %zu training examples sent", s->examples);
        s->state = ROUND_IDLE;
        rs_free(&s->rs);
        sa_clear(s);
        return;
    }
    char global[128];
    if (s->test && s->test->n)
        snprintf(global, sizeof global, "global loss %.4f acc %.1f%% on %zu local test examples",
                 s->global_loss, 100.0 * s->global_acc, s->test->n);
    else
        snprintf(global, sizeof global, "no local test split");
    FED_LOG(
        s->info, "site: round %" PRIu64 ": %zu examples, train loss %.4f acc %.1f%%, %s, %.2f s",
        rs->round, s->train->n, s->train_loss, 100.0 * s->train_acc, global, now_s() - s->t_round);
    s->stats.rounds_done++;
    s->state = ROUND_IDLE;
    rs_free(&s->rs);
    sa_clear(s);
    if (s->lean) release_buffers(s);
}

/* ------------------------------------------------------------------------------------ */
/* The connection loop                                                                  */

static fed_err connect_now(fed_site *s) {
    fed_client_config cc = fed_client_default_config();
    cc.endpoint = s->endpoint;
    cc.server_name = s->server_name;
    cc.net = s->net;
    cc.identity = s->identity;
    char *caps[3] = {FED_SITE_CAP_DELTA, FED_SITE_CAP_EVAL, FED_SITE_CAP_SECAGG};
    cc.hello.software = s->software;
    cc.hello.capabilities = caps;
    cc.hello.num_capabilities = 3;
    cc.hello.train_examples = s->stats.train_examples;
    cc.hello.eval_examples = s->stats.eval_examples;
    return fed_client_new(&s->cli, s->zctx, &cc);
}

/* Reconnect delay after `attempt` failures in a row. */
static int backoff_ms(fed_site *s, int attempt) {
    double d = (double)s->backoff_initial_ms;
    for (int i = 0; i < attempt && d < (double)s->backoff_max_ms; i++) d *= 2.0;
    if (d > (double)s->backoff_max_ms) d = (double)s->backoff_max_ms;
    d *= 1.0 - s->backoff_jitter * fed_rng_uniform_d(&s->jitter);
    return d < 1.0 ? 1 : (int)d;
}

static void disconnect(fed_site *s) {
    if (s->rs) drop_round(s, "the connection ended");
    queue_clear(s);
    fed_client_destroy(&s->cli);
}

/* Handles one event of the connection; *done on the coordinator's final Bye. */
static void on_event(fed_site *s, site_ev *ev, bool *done) {
    switch (ev->type) {
    case FED_NET_NONE:
        break;
    case FED_NET_JOINED:
        s->attempt = 0;
        s->stats.connects++;
        FED_LOG(s->info,
                "site: joined the coordinator %s at %s with %zu training / %zu test examples",
                ev->text, s->endpoint, s->stats.train_examples, s->stats.eval_examples);
        break;
    case FED_NET_LEFT: {
        disconnect(s);
        int ms = backoff_ms(s, s->attempt++);
        FED_LOG(s->info, "site: connection to %s ended (%s); reconnecting in %.1f s", s->endpoint,
                ev->text[0] ? ev->text : fed_strerror(ev->err), (double)ms / 1000.0);
        s->next_connect = now_s() + (double)ms / 1000.0;
        break;
    }
    case FED_NET_MESSAGE:
        if (ev->msg == FED_MSG_ROUND_START) {
            on_round_start(s, ev);
        } else if (ev->msg == FED_MSG_BYE && ev->code) {
            FED_LOG(s->info, "site: the coordinator says goodbye: %s",
                    ev->text[0] ? ev->text : "(no reason)");
            s->stats.bye = true;
            *done = true;
        } else if (ev->msg == FED_MSG_BYE) {
            /* Only the coordinator process is going away (a restart): come back. */
            disconnect(s);
            int ms = backoff_ms(s, s->attempt++);
            FED_LOG(s->info, "site: the coordinator is going away (%s); reconnecting in %.1f s",
                    ev->text[0] ? ev->text : "no reason", (double)ms / 1000.0);
            s->next_connect = now_s() + (double)ms / 1000.0;
        } else if (ev->msg == FED_MSG_SECAGG) {
            on_secagg(s, ev->sa_round, ev->sa, ev->sa_len);
        } else if (ev->msg == FED_MSG_ERROR) {
            if (ev->err_round &&
                (!s->rs || ev->err_round != s->rs->round || ev->err_attempt != s->rs->attempt)) {
                /* About an attempt that is over here too (an old Update, refused late). */
                FED_LOG(FED_LOG_DEBUG,
                        "site: error about round %" PRIu64 " attempt %" PRIu64 " ignored: %s",
                        ev->err_round, ev->err_attempt, ev->text);
                break;
            }
            FED_LOG(FED_LOG_WARN, "site: the coordinator reports error %" PRIu32 ": %s", ev->code,
                    ev->text);
            if (s->state == ROUND_SENDING)
                drop_round_tell(s, "the coordinator rejected the update", false);
        } else {
            FED_LOG(FED_LOG_DEBUG, "site: ignored a %s message", fed_msg_type_name(ev->msg));
        }
        break;
    case FED_NET_TRANSFER_DONE:
        on_transfer_done(s, ev);
        break;
    case FED_NET_TRANSFER_SENT:
        on_transfer_sent(s, ev);
        break;
    case FED_NET_TRANSFER_FAILED:
        on_transfer_failed(s, ev);
        break;
    }
}

fed_err fed_site_step(fed_site *s, int timeout_ms, bool *done) {
    *done = false;
    int job = atomic_load(&s->job);
    if (job == JOB_RUNNING || job == JOB_DONE) {
        /* A worker has the round: only move bytes and queue what arrives. */
        pump(s);
        return FED_OK;
    }
    if (!s->cli) {
        double wait = s->next_connect - now_s();
        if (wait > 0.0) {
            int ms = (int)(wait * 1000.0) + 1;
            if (timeout_ms > 0) sleep_ms(ms < timeout_ms ? ms : timeout_ms);
            return FED_OK;
        }
        fed_err err = connect_now(s);
        if (err == FED_EIO) { /* e.g. a name that does not resolve yet */
            int ms = backoff_ms(s, s->attempt++);
            FED_LOG(FED_LOG_WARN, "site: cannot connect to %s: %s; retrying in %.1f s", s->endpoint,
                    fed_errmsg(), (double)ms / 1000.0);
            s->next_connect = now_s() + (double)ms / 1000.0;
            return FED_OK;
        }
        if (err) return site_err(s, err);
    }
    site_ev ev;
    fed_err err = next_event(s, timeout_ms, &ev);
    if (err) return site_err(s, err);
    if (ev.type == FED_NET_LEFT && ev.permanent) {
        /* The coordinator refused our certificate (or we its): the same again next time. */
        disconnect(s);
        err = fed_errorf(ev.err ? ev.err : FED_EAUTH, "%s; not retrying", ev.text);
        ev_free(&ev);
        return site_err(s, err);
    }
    on_event(s, &ev, done);
    ev_free(&ev);
    return FED_OK;
}

fed_err fed_site_run(fed_site *s, volatile sig_atomic_t *stop) {
    if (s->external)
        return site_err(s, fed_errorf(FED_EINVAL, "fed_site_run: this site trains externally "
                                                  "(fed_site_step and fed_site_job_*)"));
    s->stop = stop;
    s->stats.bye = false;
    if (s->threads) fed_blas_set_threads((int)s->threads);
    s->attempt = 0;
    s->next_connect = 0.0;
    fed_err err = FED_OK;
    for (;;) {
        if (stopped(s)) {
            fed_site_say_bye(s);
            FED_LOG(s->info, "site: stopping");
            break;
        }
        bool done = false;
        if ((err = fed_site_step(s, POLL_MS, &done)) || done) break;
    }
    disconnect(s);
    s->stop = NULL;
    return site_err(s, err);
}

void fed_site_say_bye(fed_site *s) {
    if (s->cli && fed_client_ready(s->cli)) {
        fed_msg m = {.type = FED_MSG_BYE};
        m.u.bye.reason = "site stopping";
        (void)send_msg(s, &m);
    }
}

fed_err fed_site_disconnect(fed_site *s) {
    int job = atomic_load(&s->job);
    if (job == JOB_RUNNING)
        return site_err(s, fed_errorf(FED_EAGAIN, "fed_site_disconnect: a worker is training"));
    atomic_store(&s->job, JOB_NONE);
    disconnect(s);
    return FED_OK;
}

/* ------------------------------------------------------------------------------------ */
/* External training                                                                    */

bool fed_site_job_ready(const fed_site *s) {
    return atomic_load(&s->job) == JOB_READY;
}

uint64_t fed_site_job_round(const fed_site *s) {
    return s->rs ? s->rs->round : 0;
}

void fed_site_job_claim(fed_site *s) {
    int want = JOB_READY;
    atomic_compare_exchange_strong(&s->job, &want, JOB_RUNNING);
}

void fed_site_job_run(fed_site *s, fed_site_trainer *t) {
    if (atomic_load(&s->job) != JOB_RUNNING) return;
    const char *what = "";
    fed_err err = FED_OK;
    s->job_result = train_round(s, t, &err, &what);
    s->job_err = err;
    snprintf(s->job_what, sizeof s->job_what, "%s", what);
    snprintf(s->job_detail, sizeof s->job_detail, "%s", err ? fed_errdetail(err) : "");
    atomic_store(&s->job, JOB_DONE);
}

bool fed_site_job_done(const fed_site *s) {
    return atomic_load(&s->job) == JOB_DONE;
}

bool fed_site_connected(const fed_site *s) {
    return s->cli && fed_client_ready(s->cli);
}

bool fed_site_job_update(const fed_site *s, const float **delta, size_t *n, uint64_t *examples) {
    *delta = NULL;
    *n = 0;
    *examples = 0;
    if (atomic_load(&s->job) != JOB_DONE || s->job_result != TR_OK || atomic_load(&s->abort))
        return false;
    *delta = s->delta;
    *n = s->delta_n;
    *examples = s->train->n;
    return true;
}

void fed_site_job_finish(fed_site *s) {
    if (atomic_load(&s->job) != JOB_DONE) return;
    atomic_store(&s->job, JOB_NONE);
    if (s->job_err) fed_errorf(s->job_err, "%s", s->job_detail); /* this thread's message */
    if (atomic_load(&s->abort) && s->job_result == TR_OK) s->job_result = TR_ABORTED;
    conclude_round(s, s->job_result, s->job_err, s->job_what);
}

void fed_site_job_abort(fed_site *s, const char *why) {
    interrupt(s, why);
}

fed_err fed_site_trainer_new(fed_site_trainer **out) {
    *out = fed_calloc(1, sizeof **out);
    return *out ? FED_OK : FED_ENOMEM;
}

void fed_site_trainer_destroy(fed_site_trainer **t) {
    if (!t || !*t) return;
    trainer_clear(*t);
    fed_free(*t);
    *t = NULL;
}
