/* Internal to coordinator/: what the coordinator's files share (redis's server.h for
 * aof.c, rdb.c...): the coordinator object, the registry's client record, and the
 * functions one file calls in another, named fed__coord_*. Only coordinator's .c files
 * and the tests that look inside include it. */
#ifndef FED_COORDINATOR_INTERNAL_H
#define FED_COORDINATOR_INTERNAL_H

#include "coordinator/checkpoint.h"
#include "coordinator/coordinator.h"
#include "coordinator/pipeline.h"
#include "coordinator/status.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/codec.h"
#include "core/log.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "core/train_spec.h"
#include "dataset/moments.h"
#include "privacy/dp.h"
#include "privacy/identity.h"
#include "privacy/secagg.h"
#include "privacy/secagg_crypto.h"
#include "training/fit.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Where a sampled client stands in the open round. */
typedef enum cstatus {
    ST_IDLE = 0,  /* not sampled */
    ST_WAITING,   /* sampled, no update yet */
    ST_PENDING,   /* update announced, waiting for a free aggregator slot */
    ST_RECEIVING, /* delta arriving into its slot */
    ST_ACCEPTED,  /* committed */
    ST_REJECTED,  /* refused; nothing more this round */
    ST_FAILED,    /* its round failed at the site (it sent Error); nothing more this round */
    ST_GONE,      /* left mid-round */
    ST_OUT,       /* secure aggregation: out of the round's protocol (keys or shares missing
                     or refused, or too late); nothing more this round */
} cstatus;

/* Secure aggregation: the phase of the open attempt (privacy/secagg.h). */
typedef enum sa_phase {
    SA_KEYS = 0, /* collecting ADVERTISE */
    SA_SHARES,   /* collecting SHARES */
    SA_MASKED,   /* collecting masked updates (as Update transfers) */
    SA_UNMASK,   /* collecting UNMASK_REPLY */
} sa_phase;

/* What a participant has sent in the open attempt (client.sa_got). */
enum { GOT_KEYS = 1, GOT_SHARES = 2, GOT_UNMASK = 4 };

/* Metadata key of an input transform (fed_std_to_json), in model files and checkpoints. */
#define META_STD "fedtune.standardize"

#define META_DP_STEPS "fedtune.dp_steps"
#define META_DP_RDP   "fedtune.dp_rdp"
#define META_DP_CLIP  "fedtune.dp_clip_now"

/* Transfer ids of model broadcasts: the model version, with this bit when the transfer
 * holds the trainable tensors only (RoundStart.trainable_only). */
#define TRANSFER_TRAINABLE ((uint64_t)1 << 62)
/* ... a downlink delta (fed_coord_down): the change from the held version, compressed */
#define TRANSFER_DELTA ((uint64_t)1 << 61)

/* Longest reason a client gave no update that a failed attempt's log line quotes. */
#define WHY_MAX 200

/* One client of the registry, keyed by CN. */
typedef struct client {
    char cn[FED_NET_CN_MAX + 1]; /* certificate CN */
    uint32_t peer;               /* server handle */
    bool connected;              /* has an admitted session */
    uint64_t held;               /* model version we know it holds (0: none) */
    uint64_t sending;            /* id of the model transfer in flight to it (0: none) */
    bool base_cache;             /* its Hello offers the capability FED_SITE_CAP_BASE */
    bool delta_down;             /* ... FED_CAP_DELTA_DOWN: it keeps the version it holds */
    bool base_held;              /* it holds the frozen base (c->base.sha): model transfers
                                    to it carry the trainable tensors only */
    cstatus status;              /* in the open round */
    fed_agg_slot slot;           /* its update's slot while ST_RECEIVING */
    size_t raw;                  /* a compressed update: its byte buffer (raw) meanwhile */
    fed_encoding up_enc;         /* the announced update's encoding */
    uint64_t up_id, up_bytes;    /* announced update transfer */
    uint8_t up_sha[FED_SHA256_LEN];
    double weight;             /* examples of the update (1 with DP or secagg) */
    uint64_t hello_examples;   /* training examples its Hello announced: an update may
                                  claim no more */
    char why[WHY_MAX];         /* why it gave no update in the open attempt ("": none) */
    size_t commit_seq;         /* 1-based order in which its update was folded (0: not) */
    double gloss, gacc, geval; /* global_loss, global_accuracy, eval_examples (NaN: absent) */
    double tloss;              /* train_loss of its update (NaN: absent) */
    uint32_t sa_id;            /* secure aggregation: participant id in the open attempt */
    unsigned sa_got;           /* GOT_* of the open attempt */
    bool told;                 /* sent a Bye by this process (LINGERING: the federation is
                                  over); the process waits for it to close its session */
    int64_t last_seen;         /* unix seconds of its last event (status.c) */
    uint64_t accepted_total;   /* its updates accepted, rejected (status.c) */
    uint64_t rejections_total;
    bool sampled_since_join; /* sampled since its session was admitted (status.c) */
} client;

/* The coordinator. One thread, the event loop (fed_coord_step), owns every field except
 * `signals`, which signal handlers write (any thread, async-signal-safe). */
struct fed_coord {
    fed_coord_config cfg;    /* as given (strings borrowed) */
    void *zctx;              /* ZeroMQ context */
    bool own_ctx;            /* zctx is ours to destroy */
    fed_server *srv;         /* the channel */
    fed_model *model;        /* the global model */
    char *arch_json;         /* canonical architecture */
    fed_msg_tensor *tensors; /* (ntensors) the manifest */
    size_t ntensors;
    size_t ntrainable; /* floats of the trainable tensors */
    fed_agg *agg;      /* (ntrainable) */
    fed_strategy *strat;
    uint8_t sha[FED_SHA256_LEN]; /* of the global parameters */
    /* The frozen base (the tensors no round changes) and the trainable part of the
     * buffer (fed_manifest_gather): a site that holds the base is sent the trainable part
     * only. */
    struct {
        size_t n;                          /* floats of the base (0: everything trains) */
        bool hashed;                       /* sha is set */
        uint8_t sha[FED_SHA256_LEN];       /* of the base, computed once */
        float *train;                      /* (ntrainable) this version's trainable part */
        uint8_t train_sha[FED_SHA256_LEN]; /* of train */
    } base;
    fed_coord_state state;
    uint64_t rounds_done, version;
    client *cl; /* the registry (registry.c) */
    size_t ncl, capcl;
    struct {
        uint32_t *by_cn;   /* open addressing by CN hash: index into cl + 1, 0 empty */
        size_t cn_cap;     /* its slots: a power of two, >= 2 ncl */
        uint32_t *by_peer; /* index into cl + 1 by the network's peer handle, 0 none */
        size_t peer_cap;   /* its slots */
    } reg;
    FILE *metrics;
    fed_coord_round_stats cur, last;
    uint64_t rejected_total;
    bool ended_before;    /* the last round was done before this process started */
    int64_t linger_until; /* LINGERING: monotonic ms when it ends */
    int64_t next_stop_check;
    struct {
        volatile sig_atomic_t stop, reopen; /* fed_coord_request_stop / _reopen */
    } signals;
    /* The open round's attempt (collect.c). */
    struct {
        uint64_t n;                /* the attempt of the open round, 1-based */
        int64_t retry_at;          /* monotonic ms before which a failed attempt is not retried */
        uint32_t same_fails;       /* failed attempts in a row with the main reason fail_why */
        char fail_why[WHY_MAX];    /* the main reason of the last failed attempt */
        char give_up[768];         /* set: the federation stops with this reason */
        uint64_t sample_seed;      /* stream seed of the current sample */
        int64_t deadline;          /* monotonic ms */
        int64_t min_fit_at;        /* monotonic ms when min_fit updates were in (0: not yet) */
        int64_t t0;                /* monotonic ms of the round's first sample */
        uint64_t rx0, tx0;         /* server byte counters at the round's start */
        uint64_t last_rx, last_tx; /* at the last progress check */
        size_t *order;             /* ordered_uploads: the sample's indices into cl, in CN order */
        size_t norder, caporder;
        size_t population; /* clients connected when the round's sample was drawn */
    } att;
    /* Uploads that are bytes, not deltas (masked updates, the statistics round's
     * moments): their receive buffers, one per slot. */
    struct {
        uint8_t **buf; /* (n) */
        size_t *cap;   /* (n) their sizes */
        bool *busy;    /* (n) */
        size_t n;
    } raw;
    /* The statistics round (round 0): the federation's input standardisation
     * (stats_round.c). */
    struct {
        bool active;           /* the open round is the statistics round */
        char *transform;       /* the input transform the manifest carries (JSON), NULL: none */
        bool ours;             /* computed by the statistics round: checkpoints and the export
                                  carry it */
        size_t groups;         /* input groups of the model's standardizer */
        fed_mom_sum sum;       /* the statistics round's running sum */
        fed_dataset *eval_own; /* eval_data with the transform the statistics round computed */
    } stats;
    /* Differential privacy (dp_round.c). */
    struct {
        fed_dp_accountant *acc; /* the privacy spent (NULL without DP) */
        double clip_now;        /* the clipping bound of the next round (adaptive) */
    } dp;
    /* Secure aggregation, cfg.secagg (secagg_round.c). */
    struct coord_sec {
        fed_id *id;        /* the CA that signs the clients' certificates (NULL: plaintext) */
        fed_sa_server *sa; /* the open attempt's protocol, NULL between attempts */
        fed_sa_params params;
        sa_phase phase;
        int64_t deadline; /* monotonic ms: end of a key or unmask phase */
        size_t *cl;       /* participant id -> index into cl (params.n) */
        float *sum;       /* (ntrainable) the decoded sum of the survivors' updates */
        size_t survivors;
    } sec;
    fed_stage *pipe; /* the round's close: the update pipeline's stages (pipeline.h) */
    fed_codec codec; /* cfg.compress: the uplink codec RoundStart asks for */
    char codec_name[FED_CODEC_NAME]; /* its canonical name ("none": off) */
    fed_coord_down down;             /* cfg.compress_down: the last version's change */
    /* Administration (admin.c). */
    struct {
        bool paused;                         /* no new round or attempt starts */
        char (*evicted)[FED_NET_CN_MAX + 1]; /* CNs whose sessions are refused */
        size_t nevicted, capevicted;
    } admin;
    fed_coord_status *status; /* what monitoring reads from other threads (status.h) */
    /* Driven rounds, cfg.driven (drive.c). */
    struct {
        fed_coord_drive_state state;
        int64_t until;   /* monotonic ms: the running round's deadline */
        float *mean;     /* (ntrainable) the last closed round's aggregate */
        double weight;   /* its total weight */
        char why[768];   /* FAILED: why */
        char *optimizer; /* the running round's optimizer name (cfg.train borrows it) */
    } drive;
};

/* ---- coordinator.c ------------------------------------------------------- */
/* After the global weights change: their digest, the trainable part a site holding the
 * base is sent, its digest, and once the base's digest. Only FED_ENOMEM. */
fed_err fed__coord_update_sha(fed_coord *c);
fed_err fed__coord_open_metrics(fed_coord *c);
fed_err fed__coord_finish(fed_coord *c, const char *why, bool finished);
fed_err fed__coord_give_up(fed_coord *c);

/* ---- registry.c ---------------------------------------------------------- */
size_t fed__coord_connected_count(const fed_coord *c);
uint64_t fed__coord_current_round(const fed_coord *c);
const char *fed__coord_round_name(const fed_coord *c, char buf[32]);
bool fed__coord_bytes_upload(const fed_coord *c);
void fed__coord_cancel(fed_coord *c, uint32_t peer, uint64_t id);
void fed__coord_drop_update(fed_coord *c, client *k);
void fed__coord_reject(fed_coord *c, client *k, const fed_msg_update *u, uint32_t code,
                       const char *fmt, ...) FED_PRINTF(5, 6);
void fed__coord_reject_round(fed_coord *c, client *k, uint32_t code, const char *what);
fed_err fed__coord_send_round_start(fed_coord *c, client *k, bool force);
double fed__coord_metric(const fed_msg_update *u, const char *name);
fed_err fed__coord_on_event(fed_coord *c, const fed_net_event *ev);
/* The registered client of CN cn, or NULL (never creates one). */
client *fed__coord_find(fed_coord *c, const char *cn);

/* ---- admin.c ------------------------------------------------------------- */
/* Handles what concerns administration (an admin's session, an AdminRequest, an evicted
 * site's session) and returns true; false for everything the registry handles. */
bool fed__coord_admin_event(fed_coord *c, const fed_net_event *ev);
/* True when an admin evicted the site of that CN (until readmit). */
bool fed__coord_is_evicted(const fed_coord *c, const char *cn);

/* ---- collect.c ----------------------------------------------------------- */
void fed__coord_on_update(fed_coord *c, client *k, const fed_msg_update *u);
bool fed__coord_compressed(const client *k);
fed_err fed__coord_decode_update(fed_coord *c, client *k);
void fed__coord_end_attempt(fed_coord *c);
fed_err fed__coord_do_sample(fed_coord *c);
void fed__coord_do_broadcast(fed_coord *c);
fed_coord_state fed__coord_attempt_failed(fed_coord *c, const char *what);
fed_coord_state fed__coord_collect(fed_coord *c);
fed_coord_state fed__coord_collect_updates(fed_coord *c);

/* ---- secagg_round.c ------------------------------------------------------ */
void fed__coord_on_secagg(fed_coord *c, client *k, const fed_msg_secagg *m);
fed_err fed__coord_sa_begin(fed_coord *c, client **ready, size_t n, size_t k);
fed_coord_state fed__coord_sa_collect(fed_coord *c);
fed_coord_state fed__coord_sa_begin_unmask(fed_coord *c);

/* ---- stats_round.c ------------------------------------------------------- */
fed_err fed__coord_set_transform(fed_coord *c, const char *json, const char *what);
fed_err fed__coord_standardize_eval(fed_coord *c);
fed_err fed__coord_add_moments(fed_coord *c, const client *k, const uint8_t *bytes);
fed_coord_state fed__coord_finish_stats(fed_coord *c);

/* The stages in chain order, one registration line each: X(name) is stage_<name>.c,
 * whose fed__coord_stage_<name>(chain, c) appends the stage when c's configuration wants
 * it (and does nothing otherwise). */
#define FED_COORD_STAGES(X)                                                                        \
    X(mean)                                                                                        \
    X(secagg)                                                                                      \
    X(robust)                                                                                      \
    X(dp)                                                                                          \
    X(strategy)                                                                                    \
    X(downlink)

#define DECLARE(name) fed_err fed__coord_stage_##name(fed_stage **chain, fed_coord *c);
FED_COORD_STAGES(DECLARE)
#undef DECLARE

/* ---- pipeline.c ---------------------------------------------------------- */
fed_err fed__coord_pipeline_build(fed_coord *c);
fed_err fed__coord_aggregate(fed_coord *c);

/* ---- dp_round.c ---------------------------------------------------------- */
fed_err fed__coord_spent(const fed_coord *c, double *eps);
fed_err fed__coord_accountant_meta(const fed_dp_accountant *acc, double clip_now, fed_meta *meta);
fed_err fed__coord_restore_accountant(fed_dp_accountant *acc, const fed_meta *meta, uint64_t round);
fed_err fed__coord_next_epsilon(const fed_coord *c, double *eps);

/* ---- drive.c ------------------------------------------------------------- */
/* WAITING of a driven coordinator: true when the asked round may start now; fails it
 * when its deadline passed first. */
bool fed__coord_drive_may_start(fed_coord *c);
/* The round's close: keeps r's aggregate for the caller (ENOMEM only). */
fed_err fed__coord_drive_keep(fed_coord *c, const fed_round_agg *r);
/* The round is checkpointed (DONE), or its attempt failed (FAILED with what). */
void fed__coord_drive_closed(fed_coord *c);
void fed__coord_drive_failed(fed_coord *c, const char *what);
void fed__coord_drive_free(fed_coord *c);

/* ---- report.c ------------------------------------------------------------ */
/* The central evaluation's batch: eval_batch, fewer where a batch's activations would
 * pass 16 MB (report.c). */
size_t fed__coord_eval_batch(const fed_coord *c);
fed_err fed__coord_evaluate(fed_coord *c);
fed_err fed__coord_checkpoint(fed_coord *c);

#endif
