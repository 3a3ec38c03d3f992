/* Internal to client/: the site's internals, shared by the files of client/ and nothing else (the
 * public API is client/client.h): struct fed_site with its fields grouped by the thread that owns
 * them, the owned event copies, and the site_* functions one file of client/ defines and
 * another calls. Which file holds what:
 *   client.c       object lifetime (new/destroy), the connection loop (connect, backoff,
 *                  poll, dispatch of events), the rest of the public API;
 *   site_data.c    the local data: loading, splitting, standardising, the model's input
 *                  transform, the statistics round's moments;
 *   site_round.c   the round state machine: RoundStart, the model transfer, the Update
 *                  and its upload, drop/cancel/fail, the round's end;
 *   site_train.c   a round's local work (model check, evaluation, fed_fit, the delta, the
 *                  audit copy): the part that may run on a worker thread;
 *   site_secagg.c  the site's side of secure aggregation and the masked Update;
 *   site_pipeline.c, stage_*.c  the update pipeline (site_pipeline.h): delta, clip,
 *                  noise, mask;
 *   site_worker.c  threading: events queued while training, pump, interrupt, and the
 *                  external-training jobs (fed_site_job_*).
 *
 * Threads. The "I/O thread" is the one that calls fed_site_run / fed_site_step and the
 * other fed_site_* calls of the site (the simulator's site thread); it alone touches the
 * connection. Without external training it also trains, inside fed_fit's callbacks. With
 * external training a worker thread trains the round between fed_site_job_claim (job.state
 * JOB_RUNNING) and its atomic store of JOB_DONE: during that window the worker owns
 * `data` and `res` and reads `cfg`, `model` and the round's rs/t_round/rx_s_per_byte,
 * which the I/O thread then leaves alone (fed_site_step only pumps, and pump handles
 * nothing that writes them); the job's atomic state orders the hand-over both ways. */
#ifndef FED_CLIENT_SITE_INTERNAL_H
#define FED_CLIENT_SITE_INTERNAL_H

#include "client/client.h"
#include "client/site_pipeline.h"

#include "core/clock.h"
#include "core/log.h"
#include "core/model.h"
#include "core/rng.h"
#include "privacy/identity.h"
#include "privacy/secagg.h"

#include <stdatomic.h>

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

/* How a round's training ended (site_train_round), for site_conclude_round. */
typedef enum train_result {
    TR_OK = 0,    /* s->res.delta holds the update */
    TR_ABORTED,   /* interrupted: drop the round */
    TR_FAIL_MSG,  /* the coordinator's message is at fault: site_fail_round_err */
    TR_FAIL_DATA, /* the local data or training: fail_round_local(what) */
    TR_NONFINITE, /* the update is not finite */
    TR_DEADLINE,  /* the deadline came before a single step: skip the round */
} train_result;

/* A model a round trains: the site's own, or a simulator worker's (fed_site_trainer). */
struct fed_site_trainer {
    fed_model *model; /* built from arch */
    char *arch;       /* the architecture JSON it was built from */
};

/* Settings copied from fed_site_config by fed_site_new (strings owned) and never written
 * afterwards: any thread reads them. */
typedef struct site_settings {
    char *endpoint;                         /* coordinator endpoint */
    char *server_name;                      /* expected certificate name */
    char *identity;                         /* plaintext (simulation): the name claimed */
    char *tls[4];                           /* ca, cert, key, crl (NULL: none) */
    fed_net_config net;                     /* with tls pointing at the copies above */
    char software[SOFTWARE_MAX];            /* Hello.software */
    size_t threads;                         /* OpenBLAS threads, 0: leave */
    size_t max_epochs, max_batch;           /* local caps, 0: none */
    bool has_tok;                           /* the data were tokenized by: */
    uint8_t tok_sha[FED_SHA256_LEN];        /* this tokenizer (its canonical JSON's digest) */
    char *save_updates;                     /* audit folder, or NULL */
    int backoff_initial_ms, backoff_max_ms; /* reconnect delays */
    double backoff_jitter;                  /* share of a delay cut at random */
    bool external;                          /* rounds are trained by fed_site_job_run */
    bool lean;                              /* free the model buffers after every round */
    fed_log_level info;                     /* level of progress lines: INFO, DEBUG when external */
    fed_site_attack attack;                 /* simulator only: the update's attack (zero: none) */
    bool codec;                             /* announce FED_CAP_CODEC and compress when asked */
    char *state_dir;                        /* the residual kept here across restarts, or NULL */
    uint64_t codec_seed;                    /* stochastic rounding's seed (the site's seed) */
    fed_site_train_fn train_fn;             /* delegated training (relay), or NULL */
    void *train_user;                       /* its argument */
} site_settings;

/* The connection and its loop. I/O thread only: no worker ever touches the channel. */
typedef struct site_conn {
    void *zctx;          /* ZeroMQ context */
    bool own_zctx;       /* made by us */
    fed_client *cli;     /* current connection, or NULL between connections */
    uint64_t gen;        /* connections made so far (fed_site_wake_fds) */
    int attempt;         /* failed connection attempts in a row */
    double next_connect; /* when to connect again */
    fed_rng jitter;      /* reconnect jitter */
} site_conn;

/* The local data, prepared by fed_site_new. Owned by the thread that trains the round:
 * the first round that brings an input transform replaces train/test (site_use_transform,
 * called by site_train_round), on the worker while a job runs. The I/O thread reads them
 * only outside a running job (statistics round, log lines, fed_site_job_update). */
typedef struct site_data {
    fed_dataset *train;                /* local training split, prepared */
    fed_dataset *test;                 /* local test split, prepared, or NULL */
    fed_dataset *train_raw, *test_raw; /* the same before any standardisation; NULL while
                                          train/test are still raw (one copy, not two) */
    char *transform; /* the model's input transform now applied (NULL: local or none) */
} site_data;

/* A frozen base in the store (base_cache.c), counted while a round uses it. */
typedef struct site_base site_base;

/* The global model held: weights in host order. Written by the I/O thread only (when a
 * transfer completes, when a lean site releases it), never while a job runs; the worker
 * reads `global` while its job runs. */
typedef struct site_model {
    float *global;                      /* (global_n) */
    size_t global_cap;                  /* floats allocated */
    size_t global_n;                    /* floats held; 0: no model */
    uint64_t global_version;            /* its model version */
    uint8_t global_sha[FED_SHA256_LEN]; /* of the little-endian bytes */
    char *global_arch;                  /* its architecture JSON */
    float *rx;                          /* receive buffer of a model transfer */
    size_t rx_cap;                      /* floats allocated */
} site_model;

/* The round in progress. The I/O thread's: it alone writes these; while a job runs the
 * worker reads rs, t_round and rx_s_per_byte (the deadline) and runs pipe's stages of
 * SITE_STAGE_TRAINED, and the I/O thread only queues the events that would change them. */
typedef struct site_round {
    round_state state;       /* where the round is */
    fed_msg_round_start *rs; /* its RoundStart (owned copy), NULL when idle */
    site_stage *pipe;        /* its update pipeline (site_pipeline.h), built from rs */
    double t_round;          /* when it started (its RoundStart arrived) */
    double t_rx;             /* when its model transfer was asked for */
    double rx_s_per_byte;    /* how long the last model transfer took per byte (0: none
                                yet): the estimate of the upload's time */
    site_base *base;         /* rs->trainable_only: the base the trainable part completes */
} site_round;

/* What the round's training produced. Written by the thread that trains (the worker
 * while a job runs; otherwise the I/O thread, which also fills them for the statistics
 * round and clips, masks and byte-swaps the delta when sending); the I/O thread reads
 * them once the job is JOB_DONE. */
typedef struct site_result {
    float *delta;     /* the delta being sent: host order, little-endian once sent */
    size_t delta_cap; /* floats allocated */
    size_t delta_n;   /* floats of the delta of this round */
    size_t steps;     /* optimizer steps of the round's training */
    size_t examples;  /* examples it stepped over, at most the split's (the weight) */
    bool out_of_time; /* training stopped at the deadline */
    double train_loss, train_acc, global_loss, global_acc; /* for the round's log line */
    uint64_t eval_examples;     /* a relay's: the examples global_* were measured on */
    size_t job_in, job_out;     /* the model's input and output sizes (for the Error text) */
    fed_epoch_stats last_epoch; /* of the current fit (fed_fit's on_epoch) */
    double last_pump;           /* time of the last poll while training (used only when the
                                   I/O thread trains: a worker never pumps) */
    uint8_t *wire;              /* the compressed update being sent ("compress"), or NULL */
    size_t wire_len;            /* its bytes */
    float *resid;               /* error feedback: what the codec has not sent yet (resid_n
                                   floats; I/O thread: "compress" runs when sending) */
    size_t resid_n;
} site_result;

/* Training on the I/O thread (fed_site_run), and the way to stop any training. Everything
 * here is the I/O thread's but `abort`, which it sets (site_interrupt) and clears before
 * training starts, and which the training thread reads after every epoch. */
typedef struct site_fit {
    fed_site_trainer own;        /* the model the site trains (not external) */
    atomic_bool abort;           /* end training after this epoch */
    char abort_why[64];          /* why, for the log (never read by a worker) */
    bool in_fit;                 /* run_round is training on this thread */
    volatile sig_atomic_t *stop; /* the caller's stop flag, or NULL */
} site_fit;

/* Events polled while training, handled once it ends. I/O thread only. */
typedef struct site_queue {
    site_ev ev[QUEUE_MAX]; /* a ring */
    size_t head, len;      /* first queued event, events queued */
} site_queue;

/* External training: the job of the round, and how it ended. `state` (JOB_*) is the
 * hand-over: the I/O thread moves it NONE -> READY (and back to NONE), the claim
 * READY -> RUNNING, the worker RUNNING -> DONE after writing the rest, which the I/O
 * thread reads only once it sees DONE. */
typedef struct site_job {
    atomic_int state;    /* JOB_* */
    train_result result; /* when JOB_DONE */
    fed_err err;         /* its error */
    char what[64];       /* what failed (TR_FAIL_DATA) */
    char detail[512];    /* fed_errdetail of err, raised again on the I/O thread */
} site_job;

/* Secure aggregation of the round in progress (privacy/secagg.h). I/O thread only: its
 * messages are handled at once, also while a worker trains (pump). */
typedef struct site_secagg {
    fed_id *id;            /* the TLS identity that signs our keys, checks the neighbours';
                              NULL in plaintext mode (simulation): keys go unsigned;
                              made by fed_site_new, then only read */
    fed_sa_client *client; /* the protocol's client side, NULL when not securely aggregated */
    uint8_t *delivery;     /* the DELIVERY message, kept until the delta is ready */
    size_t delivery_len;
    uint8_t *masked; /* the MASKED message being sent */
    size_t masked_len;
} site_secagg;

struct fed_site {
    site_settings cfg;     /* any thread, read-only */
    site_conn conn;        /* I/O thread */
    site_data data;        /* the training thread (the worker while a job runs) */
    site_model model;      /* I/O thread writes; the worker reads while its job runs */
    site_round round;      /* I/O thread writes; the worker reads while its job runs */
    site_result res;       /* the training thread; I/O thread once JOB_DONE */
    site_fit fit;          /* I/O thread; abort is atomic, read by the worker */
    site_queue q;          /* I/O thread */
    site_job job;          /* hand-over through job.state (atomic) */
    site_secagg sa;        /* I/O thread */
    fed_site_stats stats;  /* counters; I/O thread */
    fed_base_cache *bases; /* frozen bases (the I/O thread uses it; it has its own lock) */
    bool own_bases;        /* made by this site */
    char errmsg[512];      /* last error of a call; I/O thread */
};

/* ------------------------------------------------------------------------------------ */
/* Shared between the files of client/ (each defined in the file named)                 */

/* client.c */
bool site_stopped(const fed_site *s); /* the caller's stop flag is set */
fed_err site_reserve(float **buf, size_t *cap, size_t n) FED_MUST_USE; /* >= n floats */

/* base_cache.c: bases by SHA-256. get: the base of n floats with that digest, from memory
 * or the folder (*out NULL when absent); put: takes data (fed_malloc'd, n floats, freed
 * whatever happens) as the base with that digest, which the caller has checked; both
 * count a use, which release ends. list: up to max digests held (memory, then files). */
fed_err site_base_get(fed_base_cache *c, const uint8_t sha[FED_SHA256_LEN], size_t n,
                      site_base **out) FED_MUST_USE;
fed_err site_base_put(fed_base_cache *c, const uint8_t sha[FED_SHA256_LEN], float *data, size_t n,
                      site_base **out) FED_MUST_USE;
void site_base_release(fed_base_cache *c, site_base **b);
const float *site_base_data(const site_base *b);
size_t site_base_list(fed_base_cache *c, uint8_t (*out)[FED_SHA256_LEN], size_t max);

/* site_data.c */
fed_err site_prepare_data(fed_site *s, const fed_site_config *c) FED_MUST_USE;
fed_err site_use_transform(fed_site *s, const char *json) FED_MUST_USE;
fed_err site_stats_moments(fed_site *s, const fed_msg_manifest *mf, bool *local) FED_MUST_USE;

/* residual.c: the error-feedback residual in <dir>/residual.bin (atomic write; strict
 * read, FED_EFORMAT naming the file; a missing file is no residual: *n 0, *e NULL). */
fed_err site_resid_save(const char *dir, const float *e, size_t n) FED_MUST_USE;
fed_err site_resid_load(const char *dir, float **e, size_t *n) FED_MUST_USE;
fed_err site_resid_parse(const uint8_t *b, size_t len, const char *path, float **e,
                         size_t *n) FED_MUST_USE;

/* site_round.c */
fed_err site_send_msg(fed_site *s, const fed_msg *m);
void site_send_error(fed_site *s, uint32_t code, const char *text, bool about_round);
fed_err site_send_update(fed_site *s, fed_encoding enc, const void *bytes,
                         uint64_t len) FED_MUST_USE;
void site_drop_round(fed_site *s, const char *why);
void site_fail_round_err(fed_site *s, fed_err e);
void site_conclude_round(fed_site *s, train_result r, fed_err err, const char *what);
void site_round_done(fed_site *s);
void site_on_round_start(fed_site *s, site_ev *ev);
void site_on_error(fed_site *s, const site_ev *ev);
void site_on_transfer_done(fed_site *s, const site_ev *ev);
void site_on_transfer_failed(fed_site *s, const site_ev *ev);
void site_on_transfer_sent(fed_site *s, const site_ev *ev);

/* site_train.c */
void site_trainer_clear(fed_site_trainer *t);
fed_err site_prepare_model(fed_site *s, fed_site_trainer *tr) FED_MUST_USE;
train_result site_train_round(fed_site *s, fed_site_trainer *t, fed_err *err, const char **what);

/* site_secagg.c */
fed_err site_sa_start(fed_site *s) FED_MUST_USE;
fed_err site_sa_send_masked(fed_site *s) FED_MUST_USE;
void site_sa_clear(fed_site *s);
void site_on_secagg(fed_site *s, uint64_t round, const uint8_t *msg, size_t len);

/* site_worker.c */
void site_rs_free(fed_msg_round_start **p);
void site_ev_free(site_ev *e);
void site_queue_clear(fed_site *s);
fed_err site_next_event(fed_site *s, int timeout_ms, site_ev *out) FED_MUST_USE;
void site_interrupt(fed_site *s, const char *why);
void site_pump(fed_site *s);

#endif
