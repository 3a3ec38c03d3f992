/* The round engine: registry, sampling, RoundStart and model broadcast, update checks
 * and zero-copy receipt into aggregator slots, the strategy step over the trainable
 * tensors, evaluation, status and metrics lines. Checkpoint files live in checkpoint.c;
 * option parsing, data loading and signal handlers in cli/cmd_coordinator.c. */
#include "coordinator/coordinator.h"
#include "core/alloc.h"
#include "training/fit.h"
#include "core/log.h"
#include "dataset/moments.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "core/train_spec.h"
#include "privacy/dp.h"
#include "privacy/identity.h"
#include "privacy/secagg.h"
#include "privacy/secagg_crypto.h"

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

/* fedtune.ErrorCode values (proto/fedtune.proto). */
enum {
    ERR_INVALID = 2,
    ERR_FORMAT = 3,
    ERR_RANGE = 5,
    ERR_SHAPE = 7,
    ERR_UNSUPPORTED = 8,
    ERR_DIGEST = 10,
};

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

/* Longest reason a client gave no update that a failed attempt's log line quotes. */
#define WHY_MAX 200

/* One client of the registry, keyed by CN. */
typedef struct client {
    char cn[FED_NET_CN_MAX + 1]; /* certificate CN */
    uint32_t peer;               /* server handle */
    bool connected;              /* has an admitted session */
    uint64_t held;               /* model version we know it holds (0: none) */
    uint64_t sending;            /* id of the model transfer in flight to it (0: none) */
    cstatus status;              /* in the open round */
    fed_agg_slot slot;           /* its update's slot while ST_RECEIVING */
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
} client;

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
    fed_coord_state state;
    uint64_t rounds_done, version;
    uint64_t attempt;       /* of the open round, 1-based */
    int64_t retry_at;       /* monotonic ms before which a failed attempt is not retried */
    uint32_t same_fails;    /* failed attempts in a row with the main reason fail_why */
    char fail_why[WHY_MAX]; /* the main reason of the last failed attempt */
    char give_up[768];      /* set: the federation stops with this reason */
    /* the statistics round (round 0): the federation's input standardisation */
    bool in_stats;             /* the open round is the statistics round */
    char *transform;           /* the input transform the manifest carries (JSON), NULL: none */
    bool transform_ours;       /* computed by the statistics round: checkpoints and the export
                                  carry it */
    size_t st_groups;          /* input groups of the model's standardizer */
    fed_mom_sum st_sum;        /* the statistics round's running sum */
    fed_dataset *eval_own;     /* eval_data with the transform the statistics round computed */
    bool ended_before;         /* the last round was done before this process started */
    int64_t linger_until;      /* LINGERING: monotonic ms when it ends */
    uint64_t sample_seed;      /* stream seed of the current sample */
    int64_t deadline;          /* monotonic ms */
    int64_t min_fit_at;        /* monotonic ms when min_fit updates were in (0: not yet) */
    int64_t round_t0;          /* monotonic ms of the round's first sample */
    uint64_t rx0, tx0;         /* server byte counters at the round's start */
    uint64_t last_rx, last_tx; /* at the last progress check */
    int64_t next_stop_check;
    client *cl;
    size_t ncl, capcl;
    FILE *metrics;
    volatile sig_atomic_t stop_req, reopen_req;
    fed_coord_round_stats cur, last;
    uint64_t rejected_total;
    size_t *order;          /* ordered_uploads: the sample's indices into cl, in CN order */
    size_t population;      /* clients connected when the round's sample was drawn */
    fed_dp_accountant *acc; /* DP: the privacy spent (NULL without DP) */
    double clip_now;        /* DP: the clipping bound of the next round (adaptive) */
    size_t norder, caporder;
    /* secure aggregation (cfg.secagg) */
    fed_id *id;        /* the CA that signs the clients' certificates (NULL: plaintext) */
    fed_sa_server *sa; /* the open attempt's protocol, NULL between attempts */
    fed_sa_params sa_params;
    sa_phase phase;
    int64_t sa_deadline; /* monotonic ms: end of a key or unmask phase */
    size_t *sa_cl;       /* participant id -> index into cl (sa_params.n) */
    uint8_t **sa_buf;    /* (slots) receive buffers of uploads that are bytes, not deltas:
                            MASKED uploads and the statistics round's moments */
    size_t *sa_cap;      /* (slots) their sizes */
    bool *sa_busy;       /* (slots) */
    size_t sa_nbuf;
    float *sa_sum; /* (ntrainable) the decoded sum of the survivors' updates */
    size_t sa_survivors;
};

static const char *const state_names[] = {"waiting",       "sampling",    "broadcasting",
                                          "collecting",    "aggregating", "evaluating",
                                          "checkpointing", "lingering",   "done"};

const char *fed_coord_state_name(fed_coord_state s) {
    return (unsigned)s <= FED_COORD_DONE ? state_names[s] : "?";
}

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

fed_coord_config fed_coord_default_config(void) {
    fed_coord_config c;
    memset(&c, 0, sizeof c);
    c.server = fed_server_default_config();
    c.eval_batch = 256;
    c.rounds = 10;
    c.fraction = 1.0;
    c.min_clients = 2;
    c.min_fit = 2;
    c.deadline_ms = 600000;
    c.wait_after_min_ms = 10000;
    c.dp_delta = 1e-5;
    c.secagg_phase_ms = 30000;
    c.dp_clip_lr = 0.2;
    c.train.epochs = 1;
    c.train.batch = 32;
    c.train.optimizer = "adam";
    c.train.lr = 1e-3f;
    c.train.seed = 1;
    c.strategy = fed_strategy_defaults(FED_STRATEGY_FEDAVG);
    c.slots = 1;
    c.keep_checkpoints = 3;
    c.seed = 1;
    c.max_examples_per_site = 1000000000;
    c.retry_backoff_ms = 1000;
    c.retry_backoff_max_ms = 60000;
    c.max_failed_attempts = 10;
    c.linger_ms = 60000;
    c.bye_wait_ms = 3000;
    c.input_stats = true;
    return c;
}

static fed_err check_config(const fed_coord_config *c) {
    if (!c->model) return fed_errorf(FED_EINVAL, "coordinator: no initial model");
    if (c->rounds < 1) return fed_errorf(FED_EINVAL, "rounds %" PRIu64 ": must be >= 1", c->rounds);
    if (!(c->fraction > 0.0 && c->fraction <= 1.0))
        return fed_errorf(FED_EINVAL, "fraction %g: must be in (0, 1]", c->fraction);
    if (c->min_clients < 1) return fed_errorf(FED_EINVAL, "min-clients 0: must be >= 1");
    if (c->min_fit < 1 || c->min_fit > c->min_clients)
        return fed_errorf(FED_EINVAL, "min-fit %zu: must be in [1, min-clients %zu]", c->min_fit,
                          c->min_clients);
    if (c->deadline_ms < 1) return fed_errorf(FED_EINVAL, "deadline-ms: must be >= 1");
    if (c->wait_after_min_ms < -1)
        return fed_errorf(FED_EINVAL, "wait-after-min-ms %" PRId64 ": must be >= -1",
                          c->wait_after_min_ms);
    if (c->max_examples_per_site < 1 || (double)c->max_examples_per_site > FED_AGG_WEIGHT_MAX)
        return fed_errorf(FED_EINVAL, "max-examples-per-site %" PRIu64 ": must be in [1, 2^53]",
                          c->max_examples_per_site);
    if (c->retry_backoff_ms < 0 || c->retry_backoff_max_ms < c->retry_backoff_ms)
        return fed_errorf(
            FED_EINVAL, "retry backoff: need 0 <= initial (%" PRId64 " ms) <= max (%" PRId64 " ms)",
            c->retry_backoff_ms, c->retry_backoff_max_ms);
    if (!(c->max_update_norm >= 0.0))
        return fed_errorf(FED_EINVAL, "max-update-norm %g: must be >= 0", c->max_update_norm);
    if (c->keep_checkpoints < 1) return fed_errorf(FED_EINVAL, "keep-checkpoints: must be >= 1");
    if (!(c->target_accuracy >= 0.0 && c->target_accuracy <= 1.0))
        return fed_errorf(FED_EINVAL, "target-accuracy %g: must be in [0, 1]", c->target_accuracy);
    if (!(c->dp_clip >= 0.0 && isfinite(c->dp_clip)))
        return fed_errorf(FED_EINVAL, "dp-clip %g: must be finite and >= 0", c->dp_clip);
    if (!(c->dp_noise >= 0.0 && isfinite(c->dp_noise)))
        return fed_errorf(FED_EINVAL, "dp-noise %g: must be finite and >= 0", c->dp_noise);
    if (c->input_stats && c->dp_clip > 0 &&
        !(c->model_meta && fed_meta_get(c->model_meta, META_STD)))
        return fed_errorf(FED_EINVAL,
                          "input-stats releases the federation's feature means and variances "
                          "without differential-privacy noise: turn it off with dp-clip (or "
                          "give the model an input standardisation)");
    if (c->dp_noise > 0 && c->dp_clip == 0)
        return fed_errorf(FED_EINVAL, "dp-noise needs dp-clip (the noise scales with it)");
    if (c->dp_clip > 0 && !(c->dp_delta > 0.0 && c->dp_delta < 1.0))
        return fed_errorf(FED_EINVAL, "dp-delta %g: must be in (0, 1)", c->dp_delta);
    if (!(c->target_epsilon >= 0.0 && isfinite(c->target_epsilon)))
        return fed_errorf(FED_EINVAL, "target-epsilon %g: must be finite and >= 0",
                          c->target_epsilon);
    if (!(c->dp_target_quantile >= 0.0 && c->dp_target_quantile < 1.0))
        return fed_errorf(FED_EINVAL, "dp-target-quantile %g: must be in [0, 1)",
                          c->dp_target_quantile);
    if (c->dp_target_quantile > 0 && c->dp_clip == 0)
        return fed_errorf(FED_EINVAL, "dp-target-quantile needs dp-clip (the initial bound)");
    if (c->dp_target_quantile > 0 && c->secagg)
        return fed_errorf(FED_EINVAL, "dp-target-quantile does not combine with secagg yet (the "
                                      "count of clipped updates would need its own secure sum)");
    if (!(c->dp_clip_lr >= 0.0 && isfinite(c->dp_clip_lr)))
        return fed_errorf(FED_EINVAL, "dp-clip-lr %g: must be finite and >= 0", c->dp_clip_lr);
    if (!(c->dp_count_noise >= 0.0 && isfinite(c->dp_count_noise)))
        return fed_errorf(FED_EINVAL, "dp-count-noise %g: must be finite and >= 0",
                          c->dp_count_noise);
    if (c->dp_target_quantile > 0 && c->dp_noise > 0 && c->dp_count_noise > 0 &&
        !(2.0 * c->dp_count_noise > c->dp_noise))
        return fed_errorf(FED_EINVAL,
                          "dp-count-noise %g: must exceed dp-noise / 2 = %g (the count's noise "
                          "is paid from the same budget)",
                          c->dp_count_noise, c->dp_noise / 2.0);
    if (c->target_epsilon > 0 && !(c->dp_clip > 0 && c->dp_noise > 0))
        return fed_errorf(FED_EINVAL, "target-epsilon needs dp-clip and dp-noise > 0");
    /* What every site would refuse must not start a federation: the sites check the
     * round's TrainConfig with this very function. */
    fed_err err = fed_train_spec_check(&c->train);
    if (err) return fed_errprefix(err, "client training (every site would refuse it)");
    if (c->secagg) {
        if (c->min_fit < 2)
            return fed_errorf(FED_EINVAL, "secagg needs min-fit >= 2 (the sum of one update is "
                                          "that update)");
        if (c->max_update_norm > 0)
            return fed_errorf(FED_EINVAL, "max-update-norm cannot apply with secagg: the "
                                          "coordinator never sees a single update");
        if (!(c->secagg_clip >= 0.0 && isfinite(c->secagg_clip)))
            return fed_errorf(FED_EINVAL, "secagg-clip %g: must be finite and >= 0",
                              c->secagg_clip);
        if (c->secagg_phase_ms < 1)
            return fed_errorf(FED_EINVAL, "secagg-phase-ms %" PRId64 ": must be >= 1",
                              c->secagg_phase_ms);
    }
    return fed_strategy_config_check(&c->strategy);
}

/* Applies the freeze option: the one parser train and sim use too (comma-separated globs,
 * a bare layer index N meaning "N.*", a pattern that matches nothing an error). */
static fed_err apply_freeze(fed_model *m, const char *globs) {
    fed_err err = fed_model_set_trainable_spec(m, globs, false, NULL);
    return err ? fed_errprefix(err, "freeze") : FED_OK;
}

static fed_err build_manifest(fed_coord *c) {
    size_t n = fed_model_num_tensors(c->model);
    c->tensors = fed_calloc(n, sizeof *c->tensors);
    if (!c->tensors) return FED_ENOMEM;
    c->ntensors = n;
    c->ntrainable = 0;
    for (size_t i = 0; i < n; i++) {
        const fed_tensor *t = fed_model_tensor(c->model, i);
        fed_msg_tensor *mt = &c->tensors[i];
        mt->name = (char *)t->name;
        mt->ndim = t->ndim;
        for (int d = 0; d < t->ndim; d++) mt->shape[d] = t->shape[d];
        mt->dtype = FED_DTYPE_F32;
        mt->trainable = t->trainable;
        if (t->trainable) c->ntrainable += t->numel;
    }
    if (c->ntrainable == 0) return fed_errorf(FED_EINVAL, "freeze: every tensor is frozen");
    return fed_arch_to_json(fed_model_arch(c->model), &c->arch_json);
}

static void update_sha(fed_coord *c) {
    fed_sha256(fed_model_params_const(c->model), fed_model_num_params(c->model) * sizeof(float),
               c->sha);
}

static fed_err open_metrics(fed_coord *c) {
    if (c->metrics) fclose(c->metrics);
    c->metrics = NULL;
    if (!c->cfg.metrics_file) return FED_OK;
    c->metrics = fopen(c->cfg.metrics_file, "a");
    if (!c->metrics) return fed_errorf(FED_EIO, "%s: %s", c->cfg.metrics_file, strerror(errno));
    return FED_OK;
}

/* ---- differential privacy ------------------------------------------------------------- */

static uint64_t current_round(const fed_coord *c);

#define META_DP_STEPS "fedtune.dp_steps"
#define META_DP_RDP   "fedtune.dp_rdp"
#define META_DP_CLIP  "fedtune.dp_clip_now"

/* Epsilon spent at dp_delta (infinite with noise 0: clipping alone guarantees nothing). */
static fed_err spent(const fed_coord *c, double *eps) {
    if (c->cfg.dp_noise == 0) {
        *eps = c->rounds_done > 0 ? (double)INFINITY : 0.0;
        return FED_OK;
    }
    return fed_dp_accountant_epsilon(c->acc, c->cfg.dp_delta, FED_DP_IMPROVED, eps, NULL);
}

/* The accountant's state as checkpoint metadata: steps and the RDP vector (%.17g, so the
 * doubles come back exactly). */
static fed_err accountant_meta(const fed_dp_accountant *acc, double clip_now, fed_meta *meta) {
    size_t n;
    const double *rdp = fed_dp_accountant_rdp(acc, &n);
    char *buf = fed_malloc(n * 26 + 1), num[32];
    if (!buf) return FED_ENOMEM;
    size_t len = 0;
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(buf + len, 27, "%s%.17g", i ? "," : "", rdp[i]);
    snprintf(num, sizeof num, "%" PRIu64, fed_dp_accountant_steps(acc));
    fed_err err = fed_meta_set(meta, META_DP_STEPS, num);
    if (!err) err = fed_meta_set(meta, META_DP_RDP, buf);
    snprintf(num, sizeof num, "%.17g", clip_now);
    if (!err) err = fed_meta_set(meta, META_DP_CLIP, num);
    fed_free(buf);
    return err;
}

/* Loads the accountant from a checkpoint's metadata. A checkpoint without it was written
 * by a run without DP: its rounds carry no guarantee, so a DP run cannot continue it. */
static fed_err restore_accountant(fed_dp_accountant *acc, const fed_meta *meta, uint64_t round) {
    const char *steps = meta ? fed_meta_get(meta, META_DP_STEPS) : NULL;
    const char *list = meta ? fed_meta_get(meta, META_DP_RDP) : NULL;
    if (!steps || !list)
        return fed_errorf(FED_EINVAL,
                          "checkpoint of round %" PRIu64 " was written without dp-clip: its "
                          "rounds have no privacy guarantee (use another checkpoint-dir)",
                          round);
    size_t n = fed_dp_num_orders(), k = 0;
    double *rdp = fed_mallocarray(n, sizeof *rdp);
    if (!rdp) return FED_ENOMEM;
    char *end;
    errno = 0;
    unsigned long long st = strtoull(steps, &end, 10);
    fed_err err = errno || *end ? FED_EFORMAT : FED_OK;
    for (const char *p = list; !err && *p && k < n; k++) {
        rdp[k] = strtod(p, &end);
        if (end == p || (*end && *end != ',')) err = FED_EFORMAT;
        p = *end ? end + 1 : end;
    }
    if (!err && k != n) err = FED_EFORMAT;
    if (err)
        err = fed_errorf(err, "checkpoint of round %" PRIu64 ": %s/%s malformed", round,
                         META_DP_STEPS, META_DP_RDP);
    else
        err = fed_dp_accountant_load(acc, rdp, n, st);
    fed_free(rdp);
    return err;
}

/* Adds Gaussian noise of std to v[0..n). The key is drawn from the operating system, or
 * derived from dp_noise_seed, the round and `what` (0: the update, 1: the clip count). */
static fed_err add_noise(fed_coord *c, float *v, size_t n, double std, uint64_t what) {
    uint8_t key[FED_SA_KEY_LEN];
    fed_err err = FED_OK;
    if (c->cfg.dp_noise_seed) {
        uint64_t w[3] = {c->cfg.dp_noise_seed, current_round(c), what};
        fed_sha256(w, what ? sizeof w : 2 * sizeof w[0], key); /* what 0: as before */
    } else if ((err = fed_sa_random_bytes(key, sizeof key))) {
        return err;
    }
    err = fed_dp_add_gaussian(v, n, std, key, current_round(c));
    fed_sa_wipe(key, sizeof key);
    return err;
}

/* Adaptive clipping: the std of the count's noise, and the update's noise multiplier
 * that leaves the round's total at dp_noise. */
static void split_noise(const fed_coord *c, double *count_std, double *z_update) {
    double z = c->cfg.dp_noise, sb = c->cfg.dp_count_noise;
    if (sb == 0 && z > 0) sb = fmax((double)c->cur.sampled / 20.0, z);
    *count_std = sb;
    *z_update = z > 0 ? 1.0 / sqrt(1.0 / (z * z) - 1.0 / (4.0 * sb * sb)) : 0.0;
}

/* ---- the statistics round's transform ---------------------------------------------- */

/* Checks an input transform (JSON) against the model's input and makes it the one the
 * manifest carries; what (a file, "the statistics round") names it in errors. */
static fed_err set_transform(fed_coord *c, const char *json, const char *what) {
    fed_standardizer *st = NULL;
    fed_err err = fed_std_from_json(&st, json);
    if (!err && st->dim != fed_model_input_size(c->model))
        err = fed_errorf(FED_ESHAPE, "it applies to %zu features, the model takes %zu", st->dim,
                         fed_model_input_size(c->model));
    fed_std_destroy(&st);
    if (err) return fed_errprefix(err, "%s: %s", what, META_STD);
    char *copy = fed_strdup(json);
    if (!copy) return FED_ENOMEM;
    fed_free(c->transform);
    c->transform = copy;
    return FED_OK;
}

/* The central evaluation set with the transform the statistics round computed (a copy:
 * eval_data is borrowed). */
static fed_err standardize_eval(fed_coord *c) {
    fed_data_destroy(&c->eval_own);
    if (!c->cfg.eval_data) return FED_OK;
    fed_standardizer *st = NULL;
    fed_err err = fed_data_clone(&c->eval_own, c->cfg.eval_data);
    if (!err) err = fed_std_from_json(&st, c->transform);
    if (!err) err = fed_std_apply(st, c->eval_own);
    fed_std_destroy(&st);
    if (err) fed_data_destroy(&c->eval_own);
    return err ? fed_errprefix(err, "central evaluation set") : FED_OK;
}

fed_err fed_coord_new(fed_coord **out, const fed_coord_config *cfg) {
    *out = NULL;
    fed_model *taken = cfg->take_model ? (fed_model *)(uintptr_t)cfg->model : NULL;
    fed_err err = check_config(cfg);
    if (err) {
        fed_model_destroy(&taken);
        return err;
    }
    fed_coord *c = fed_calloc(1, sizeof *c);
    if (!c) {
        fed_model_destroy(&taken);
        return FED_ENOMEM;
    }
    c->cfg = *cfg;
    c->cfg.model = NULL; /* borrowed or taken: not used after this point */
    if (taken)
        c->model = taken;
    else if ((err = fed_model_clone(&c->model, cfg->model)))
        goto fail;
    fed_model_drop_grads(c->model); /* the global model is never trained here */
    for (size_t i = 0; i < fed_model_num_tensors(c->model); i++)
        fed_model_set_trainable(c->model, i, true);
    if ((err = apply_freeze(c->model, cfg->freeze))) goto fail;
    if ((err = build_manifest(c))) goto fail;
    fed_shape in = fed_arch_input_shape(fed_model_arch(c->model));
    c->st_groups = fed_std_groups(&in, fed_shape_numel(&in));
    const char *mt = cfg->model_meta ? fed_meta_get(cfg->model_meta, META_STD) : NULL;
    if (mt && (err = set_transform(c, mt, "the model's metadata"))) goto fail;
    if ((err = fed_strategy_new(&c->strat, &cfg->strategy, c->ntrainable))) goto fail;
    c->version = 1;
    if (cfg->dp_clip > 0 && (err = fed_dp_accountant_new(&c->acc))) goto fail;
    c->clip_now = cfg->dp_clip;
    if (cfg->checkpoint_dir) {
        uint64_t r = 0, v = 1;
        fed_meta *meta = NULL;
        size_t swept = 0;
        if ((err = fed_ckpt_sweep(cfg->checkpoint_dir, &swept))) goto fail;
        if ((err = fed_ckpt_resume(cfg->checkpoint_dir, c->model, c->strat, &r, &v, &meta)))
            goto fail;
        if (r > 0 && c->acc) err = restore_accountant(c->acc, meta, r);
        /* The transform an earlier statistics round computed: the rounds since used it. */
        const char *ct = meta && !err && !c->transform ? fed_meta_get(meta, META_STD) : NULL;
        if (ct && !(err = set_transform(c, ct, "checkpoint"))) c->transform_ours = true;
        const char *cn = meta && !err ? fed_meta_get(meta, META_DP_CLIP) : NULL;
        if (cn && cfg->dp_target_quantile > 0) {
            char *end;
            double bound = strtod(cn, &end);
            if (*end || !(bound > 0 && isfinite(bound)))
                err = fed_errorf(FED_EFORMAT, "checkpoint of round %" PRIu64 ": %s malformed", r,
                                 META_DP_CLIP);
            else
                c->clip_now = bound;
        }
        fed_meta_destroy(&meta);
        if (err) goto fail;
        if (r > 0) {
            c->rounds_done = r;
            c->version = v;
        }
    }
    /* After the resume, which holds a second copy of the model while it verifies one: the
     * aggregator's (1 + slots) copies do not add to that peak. */
    if ((err = fed_agg_new(&c->agg, c->ntrainable, cfg->slots))) goto fail;
    fed_agg_set_clip(c->agg, cfg->secagg ? 0.0 : c->clip_now); /* secagg: the sites clip */
    if (c->transform_ours && (err = standardize_eval(c))) goto fail;
    size_t nb = cfg->slots ? cfg->slots : 1; /* byte buffers: allocated on first use */
    c->sa_buf = fed_calloc(nb, sizeof *c->sa_buf);
    c->sa_cap = fed_calloc(nb, sizeof *c->sa_cap);
    c->sa_busy = fed_calloc(nb, sizeof *c->sa_busy);
    if (!c->sa_buf || !c->sa_cap || !c->sa_busy) {
        err = FED_ENOMEM;
        goto fail;
    }
    c->sa_nbuf = nb;
    if (cfg->secagg) {
        if (!(c->sa_sum = fed_mallocarray(c->ntrainable, sizeof *c->sa_sum))) {
            err = FED_ENOMEM;
            goto fail;
        }
        if (!cfg->server.net.plaintext &&
            (err = fed_id_new(&c->id, cfg->server.net.tls.cert_file, NULL,
                              cfg->server.net.tls.ca_file, cfg->server.net.tls.crl_file)))
            goto fail;
    }
    update_sha(c);
    if ((err = open_metrics(c))) goto fail;
    c->zctx = cfg->zmq_ctx;
    if (!c->zctx) {
        if (!(c->zctx = fed_net_context_new())) {
            err = FED_ENOMEM;
            goto fail;
        }
        c->own_ctx = true;
    }
    if ((err = fed_server_new(&c->srv, c->zctx, &cfg->server))) goto fail;
    /* Even when every round is done: WAITING finishes (export, Bye) from the checkpoint. */
    c->state = FED_COORD_WAITING;
    c->ended_before = c->rounds_done >= cfg->rounds;
    c->last.round = c->rounds_done;
    c->last.model_version = c->version;
    c->last.central_loss = c->last.central_acc = (double)NAN;
    c->last.fed_loss = c->last.fed_acc = c->last.train_loss = (double)NAN;
    c->last.epsilon = (double)NAN;
    if (c->acc && (err = spent(c, &c->last.epsilon))) goto fail;
    FED_LOG(FED_LOG_INFO,
            "coordinator on %s: %zu tensors, %zu of %zu parameters trainable, %s, round %" PRIu64
            " of %" PRIu64 ", model version %" PRIu64,
            fed_server_endpoint(c->srv), c->ntensors, c->ntrainable, fed_model_num_params(c->model),
            fed_strategy_name(cfg->strategy.kind), c->rounds_done + 1, cfg->rounds, c->version);
    *out = c;
    return FED_OK;
fail:
    fed_coord_destroy(&c);
    return err;
}

static fed_err on_event(fed_coord *c, const fed_net_event *ev);

/* Sends bye to every connected site not told yet; returns how many were told (those that
 * left since included). */
static size_t tell_bye(fed_coord *c, const fed_msg *bye, bool log) {
    size_t told = 0;
    for (size_t i = 0; i < c->ncl; i++) {
        client *k = &c->cl[i];
        if (k->connected && !k->told && fed_server_send(c->srv, k->peer, bye) == FED_OK) {
            k->told = true;
            if (log) FED_LOG(FED_LOG_INFO, "%s told the federation is over", k->cn);
        }
        told += k->told;
    }
    return told;
}

static bool bye_unconfirmed(const fed_coord *c) {
    for (size_t i = 0; i < c->ncl; i++)
        if (c->cl[i].told && c->cl[i].connected) return true;
    return false;
}

/* After Byes: waits up to bye_wait_ms until every site told has closed its session, so
 * the socket is not closed under a Bye still queued (a site that misses a final Bye
 * reconnects until its own limit). A site joining meanwhile hears bye too; other
 * messages are dropped. Then no site counts as connected. */
static void let_byes_leave(fed_coord *c, const fed_msg *bye) {
    int64_t end = now_ms() + c->cfg.bye_wait_ms;
    fed_net_event ev;
    while (bye_unconfirmed(c) && now_ms() < end) {
        if (fed_server_poll(c->srv, 20, &ev) != FED_OK) break;
        if (ev.type != FED_NET_JOINED && ev.type != FED_NET_LEFT) continue;
        (void)on_event(c, &ev);
        tell_bye(c, bye, bye->u.bye.finished);
    }
    for (size_t i = 0; i < c->ncl; i++) c->cl[i].connected = false;
}

static void say_bye(fed_coord *c, const char *reason, bool finished) {
    if (!c->srv) return;
    fed_msg m;
    memset(&m, 0, sizeof m);
    m.type = FED_MSG_BYE;
    m.u.bye.reason = (char *)reason;
    m.u.bye.finished = finished;
    tell_bye(c, &m, false);
    let_byes_leave(c, &m);
}

void fed_coord_destroy(fed_coord **pc) {
    if (!pc || !*pc) return;
    fed_coord *c = *pc;
    say_bye(c, "coordinator shutting down", false);
    fed_server_destroy(&c->srv);
    if (c->own_ctx) fed_net_context_destroy(&c->zctx);
    if (c->metrics) fclose(c->metrics);
    fed_agg_destroy(&c->agg);
    fed_strategy_destroy(&c->strat);
    fed_dp_accountant_destroy(&c->acc);
    fed_sa_server_destroy(&c->sa);
    fed_id_destroy(&c->id);
    for (size_t i = 0; c->sa_buf && i < c->sa_nbuf; i++) fed_free(c->sa_buf[i]);
    fed_free(c->sa_buf);
    fed_free(c->sa_cap);
    fed_free(c->sa_busy);
    fed_free(c->transform);
    fed_mom_sum_free(&c->st_sum);
    fed_data_destroy(&c->eval_own);
    fed_free(c->sa_cl);
    fed_free(c->sa_sum);
    fed_free(c->order);
    fed_free(c->arch_json);
    fed_free(c->tensors);
    fed_free(c->cl);
    fed_model_destroy(&c->model);
    fed_free(c);
    *pc = NULL;
}

const char *fed_coord_endpoint(const fed_coord *c) {
    return fed_server_endpoint(c->srv);
}

void fed_coord_request_stop(fed_coord *c) {
    c->stop_req = 1;
}

void fed_coord_request_reopen(fed_coord *c) {
    c->reopen_req = 1;
}

void fed_coord_server_stats(const fed_coord *c, fed_net_stats *st) {
    memset(st, 0, sizeof *st);
    if (c->srv) fed_server_stats(c->srv, st);
}

fed_coord_state fed_coord_get_state(const fed_coord *c) {
    return c->state;
}

uint64_t fed_coord_rounds_done(const fed_coord *c) {
    return c->rounds_done;
}

uint64_t fed_coord_model_version(const fed_coord *c) {
    return c->version;
}

const fed_model *fed_coord_model(const fed_coord *c) {
    return c->model;
}

void fed_coord_model_sha256(const fed_coord *c, uint8_t out[FED_SHA256_LEN]) {
    memcpy(out, c->sha, FED_SHA256_LEN);
}

fed_coord_round_stats fed_coord_last_round(const fed_coord *c) {
    return c->last;
}

uint64_t fed_coord_rejected_total(const fed_coord *c) {
    return c->rejected_total;
}

/* ---- registry ----------------------------------------------------------------------- */

static client *by_peer(fed_coord *c, uint32_t peer) {
    for (size_t i = 0; i < c->ncl; i++)
        if (c->cl[i].peer == peer) return &c->cl[i];
    return NULL;
}

static client *by_cn(fed_coord *c, const char *cn, uint32_t peer) {
    for (size_t i = 0; i < c->ncl; i++)
        if (strcmp(c->cl[i].cn, cn) == 0) return &c->cl[i];
    if (c->ncl == c->capcl) {
        size_t cap = c->capcl ? 2 * c->capcl : 16;
        client *p = fed_realloc(c->cl, cap * sizeof *p);
        if (!p) return NULL;
        c->cl = p;
        c->capcl = cap;
    }
    client *k = &c->cl[c->ncl++];
    memset(k, 0, sizeof *k);
    snprintf(k->cn, sizeof k->cn, "%s", cn);
    k->peer = peer;
    return k;
}

static size_t connected_count(const fed_coord *c) {
    size_t n = 0;
    for (size_t i = 0; i < c->ncl; i++) n += c->cl[i].connected;
    return n;
}

/* The open round: 0 for the statistics round, then 1, 2, ... */
static uint64_t current_round(const fed_coord *c) {
    return c->in_stats ? 0 : c->rounds_done + 1;
}

/* "round 3", or "statistics round" for round 0: how log lines and reasons name it. */
static const char *round_name(const fed_coord *c, char buf[32]) {
    if (c->in_stats) return "statistics round";
    snprintf(buf, 32, "round %" PRIu64, current_round(c));
    return buf;
}

/* Whether uploads arrive as bytes into sa_buf (masked uploads, the statistics round's
 * moments) rather than as deltas into aggregator slots. */
static bool bytes_upload(const fed_coord *c) {
    return c->cfg.secagg || c->in_stats;
}

/* Cancels a transfer that may already be gone (FED_ENOTFOUND is fine). */
static void cancel(fed_coord *c, uint32_t peer, uint64_t id) {
    if (fed_server_cancel_transfer(c->srv, peer, id) != FED_OK) fed_errclear();
}

/* Forgets k's update in flight: cancels the transfer, aborts the slot. */
static void drop_update(fed_coord *c, client *k) {
    if (k->status == ST_RECEIVING) {
        cancel(c, k->peer, k->up_id);
        if (bytes_upload(c))
            c->sa_busy[k->slot] = false;
        else
            fed_agg_slot_abort(c->agg, k->slot);
    }
    k->slot = FED_AGG_NO_SLOT;
}

/* Sends Error{code, text} about k's update u (its round and attempt; NULL: the one of the
 * open attempt) to k, if it can, and logs one line naming it. */
static void reject(fed_coord *c, client *k, const fed_msg_update *u, uint32_t code, const char *fmt,
                   ...) FED_PRINTF(5, 6);
static void reject(fed_coord *c, client *k, const fed_msg_update *u, uint32_t code, const char *fmt,
                   ...) {
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    FED_LOG(FED_LOG_WARN, "round %" PRIu64 ": update from %s rejected: %s", current_round(c), k->cn,
            text);
    if (k->status == ST_REJECTED) /* counted out of the attempt: its reason */
        snprintf(k->why, sizeof k->why, "update rejected: %.180s", text);
    fed_msg m;
    memset(&m, 0, sizeof m);
    m.type = FED_MSG_ERROR;
    m.u.error.code = code;
    m.u.error.text = text;
    m.u.error.round = u ? u->round : current_round(c);
    m.u.error.attempt = u ? u->attempt : c->attempt;
    if (k->connected && fed_server_send(c->srv, k->peer, &m) != FED_OK)
        FED_LOG(FED_LOG_DEBUG, "error to %s not sent: %s", k->cn, fed_server_errmsg(c->srv));
    c->rejected_total++;
}

/* Rejects the open-round update of k and marks it done for the round. */
static void reject_round(fed_coord *c, client *k, uint32_t code, const char *what) {
    drop_update(c, k);
    k->status = ST_REJECTED;
    c->cur.rejected++;
    reject(c, k, NULL, code, "%s", what);
}

static uint32_t code_of(fed_err err) {
    switch (err) {
    case FED_ENONFINITE:
    case FED_ERANGE:
        return ERR_RANGE;
    case FED_EFORMAT:
        return ERR_FORMAT;
    case FED_ESHAPE:
        return ERR_SHAPE;
    case FED_EDIGEST:
        return ERR_DIGEST;
    default:
        return ERR_INVALID;
    }
}

/* ---- RoundStart ----------------------------------------------------------------------- */

/* Sends RoundStart to k, with the weights unless it holds this version (or force). */
static fed_err send_round_start(fed_coord *c, client *k, bool force) {
    bool with_model = !c->in_stats && (force || k->held != c->version);
    fed_msg m;
    memset(&m, 0, sizeof m);
    m.type = FED_MSG_ROUND_START;
    fed_msg_round_start *rs = &m.u.round_start;
    rs->round = current_round(c);
    rs->model_version = c->version;
    rs->config = c->cfg.train;
    rs->manifest.tensors = c->tensors;
    rs->manifest.num_tensors = c->ntensors;
    rs->manifest.total_bytes = (uint64_t)fed_model_num_params(c->model) * sizeof(float);
    memcpy(rs->manifest.sha256, c->sha, FED_SHA256_LEN);
    rs->manifest.arch = c->arch_json;
    /* Borrowed for encoding only: the message is never freed. */
    rs->manifest.input_transform = c->transform;
    rs->transfer_id = with_model ? c->version : 0;
    rs->attempt = c->attempt;
    rs->stats = c->in_stats;
    if (c->sa) {
        const fed_sa_params *p = &c->sa_params;
        rs->has_secagg = true;
        rs->secagg = (fed_msg_secagg_params){.participant = k->sa_id,
                                             .n = p->n,
                                             .degree = p->degree,
                                             .threshold = p->threshold,
                                             .clip_range = p->clip_range,
                                             .quant_range = p->quant_range};
        memcpy(rs->secagg.graph_seed, p->graph_seed, sizeof rs->secagg.graph_seed);
        if (c->cfg.dp_clip > 0 && !c->in_stats) {
            rs->secagg.dp_clip = c->cfg.dp_clip;
            rs->secagg.dp_noise_std = c->cfg.dp_noise * c->cfg.dp_clip / sqrt((double)p->n);
        }
    }
    int64_t left = c->deadline - now_ms();
    rs->deadline_ms = (uint64_t)(left > 0 ? left : c->cfg.deadline_ms);
    fed_err err = fed_server_send(c->srv, k->peer, &m);
    if (err || !with_model) return err;
    if (k->sending == c->version) return FED_OK; /* still on its way (across a reconnect) */
    if (k->sending) cancel(c, k->peer, k->sending);
    cancel(c, k->peer, c->version);
    err = fed_server_send_transfer(c->srv, k->peer, c->version, fed_model_params_const(c->model),
                                   rs->manifest.total_bytes);
    if (!err) k->sending = c->version;
    return err;
}

/* ---- events --------------------------------------------------------------------------- */

static double metric(const fed_msg_update *u, const char *name) {
    for (size_t i = 0; i < u->num_metrics; i++)
        if (strcmp(u->metrics[i].name, name) == 0) return u->metrics[i].value;
    return (double)NAN;
}

/* Opens a slot for k's announced update and starts receiving it; leaves it ST_PENDING
 * when every slot is busy. */
static void start_receive(fed_coord *c, client *k) {
    if (bytes_upload(c)) { /* into a free byte buffer: summed on arrival */
        size_t b = 0;
        while (b < c->sa_nbuf && c->sa_busy[b]) b++;
        if (b == c->sa_nbuf) return;
        if (c->sa_cap[b] < k->up_bytes) { /* the statistics round's are smaller */
            fed_free(c->sa_buf[b]);
            c->sa_cap[b] = 0;
            if (!(c->sa_buf[b] = fed_malloc((size_t)k->up_bytes))) {
                reject_round(c, k, ERR_INVALID, "coordinator out of memory");
                return;
            }
            c->sa_cap[b] = (size_t)k->up_bytes;
        }
        if (fed_server_recv_transfer(c->srv, k->peer, k->up_id, c->sa_buf[b], k->up_bytes,
                                     k->up_sha) != FED_OK) {
            char why[300];
            snprintf(why, sizeof why, "cannot receive the masked update: %s",
                     fed_server_errmsg(c->srv));
            reject_round(c, k, ERR_INVALID, why);
            return;
        }
        c->sa_busy[b] = true;
        k->slot = (fed_agg_slot)b;
        k->status = ST_RECEIVING;
        return;
    }
    fed_agg_slot s;
    fed_err err = fed_agg_slot_open(c->agg, &s, k->weight);
    if (err == FED_EAGAIN) return;
    if (err) {
        reject_round(c, k, code_of(err), fed_errmsg());
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
        reject_round(c, k, ERR_INVALID, why);
        return;
    }
    k->slot = s;
    k->status = ST_RECEIVING;
}

static void on_update(fed_coord *c, client *k, const fed_msg_update *u) {
    uint64_t r = current_round(c);
    bool open = c->state == FED_COORD_COLLECTING;
    if (!open || u->round != r) {
        reject(c, k, u, ERR_INVALID, "round %" PRIu64 " is not open (%s %" PRIu64 ")", u->round,
               open ? "open round" : "next round", r);
        return;
    }
    if (k->status == ST_IDLE) {
        reject(c, k, u, ERR_INVALID, "not sampled for round %" PRIu64, r);
        return;
    }
    if (u->attempt != c->attempt) { /* answers an attempt that is over: it changes nothing */
        reject(c, k, u, ERR_INVALID,
               "attempt %" PRIu64 " of round %" PRIu64 " is over (attempt %" PRIu64 " is open)",
               u->attempt, r, c->attempt);
        return;
    }
    if (k->status == ST_OUT) {
        reject(c, k, u, ERR_INVALID, "out of round %" PRIu64 "'s secure aggregation", r);
        return;
    }
    if (k->status != ST_WAITING) {
        reject(c, k, u, ERR_INVALID, "a second update for round %" PRIu64 " attempt %" PRIu64, r,
               c->attempt);
        return;
    }
    char why[256];
    uint32_t code = ERR_INVALID;
    why[0] = '\0';
    uint64_t want = (uint64_t)c->ntrainable * sizeof(float);
    fed_encoding enc = FED_ENCODING_DELTA_F32;
    if (c->sa) {
        enc = FED_ENCODING_SECAGG_MASKED;
        want = fed_sa_msg_max(&c->sa_params, FED_SA_MSG_MASKED);
    } else if (c->in_stats) {
        enc = FED_ENCODING_MOMENTS_F32;
        want = (uint64_t)fed_mom_len(c->st_groups) * sizeof(float);
    }
    if (c->sa && c->phase != SA_MASKED)
        snprintf(why, sizeof why, "a masked update before the key exchange ended");
    else if (u->model_version != c->version)
        snprintf(why, sizeof why, "model version %" PRIu64 ", current %" PRIu64, u->model_version,
                 c->version);
    else if (u->encoding != enc)
        code = ERR_UNSUPPORTED,
        snprintf(why, sizeof why, "encoding %d (this round: %d, %s)", (int)u->encoding, (int)enc,
                 c->sa         ? "securely aggregated"
                 : c->in_stats ? "moments"
                               : "plain deltas");
    else if (u->total_bytes != want)
        code = ERR_SHAPE,
        snprintf(why, sizeof why,
                 "total_bytes %" PRIu64 ", expected %" PRIu64 " (%s %zu trainable parameters)",
                 u->total_bytes, want, c->sa ? "the masked message of" : "4 x",
                 c->in_stats ? fed_mom_len(c->st_groups) : c->ntrainable);
    else if (u->examples == 0)
        snprintf(why, sizeof why, "examples 0: must be > 0");
    else if (u->examples > k->hello_examples)
        code = ERR_RANGE, snprintf(why, sizeof why,
                                   "examples %" PRIu64 ": more than the %" PRIu64
                                   " training examples its Hello announced",
                                   u->examples, k->hello_examples);
    else if (u->examples > c->cfg.max_examples_per_site)
        code = ERR_RANGE,
        snprintf(why, sizeof why, "examples %" PRIu64 ": above max-examples-per-site %" PRIu64,
                 u->examples, c->cfg.max_examples_per_site);
    else if (u->transfer_id == 0)
        snprintf(why, sizeof why, "transfer_id 0");
    if (why[0]) {
        reject_round(c, k, code, why);
        return;
    }
    k->held = c->version;
    k->up_id = u->transfer_id;
    k->up_bytes = u->total_bytes;
    memcpy(k->up_sha, u->sha256, FED_SHA256_LEN);
    /* DP: counts would leak; secagg: the sum is unweighted */
    k->weight = c->cfg.dp_clip > 0 || c->sa ? 1.0 : (double)u->examples; /* <= 2^53: exact */
    k->gloss = metric(u, "global_loss");
    k->tloss = metric(u, "train_loss");
    k->gacc = metric(u, "global_accuracy");
    k->geval = metric(u, "eval_examples");
    if (metric(u, "out_of_time") == 1.0) /* the site's training was cut to fit the deadline */
        FED_LOG(FED_LOG_INFO,
                "round %" PRIu64 ": %s stopped training at the deadline after %.0f steps and sent "
                "what it had (%" PRIu64 " examples)",
                r, k->cn, metric(u, "steps"), u->examples);
    k->status = ST_PENDING;
    if (!c->cfg.ordered_uploads) start_receive(c, k); /* else collect() takes them in order */
}

/* ---- secure aggregation: messages ------------------------------------------------------ */

/* A participant's key block must be signed by the certificate of the client it claims to
 * be: a federation site certificate whose CN is that client's. */
static fed_err sa_verify(void *ctx, uint32_t id, const uint8_t *signed_bytes, size_t signed_len,
                         const uint8_t *sig, size_t sig_len) {
    fed_coord *c = ctx;
    const client *k = &c->cl[c->sa_cl[id]];
    char cn[FED_ID_CN_MAX + 1];
    fed_err err = fed_id_verify(c->id, signed_bytes, signed_len, sig, sig_len, true, cn);
    if (err) return err;
    if (strcmp(cn, k->cn) != 0)
        return fed_errorf(FED_EAUTH, "keys signed by %s, not by the sender", cn);
    return FED_OK;
}

/* Takes k out of the attempt's secure aggregation: it is told, and not waited for. */
static void sa_exclude(fed_coord *c, client *k, const char *why) {
    FED_LOG(FED_LOG_WARN, "round %" PRIu64 ": %s out of the secure aggregation: %s",
            current_round(c), k->cn, why);
    snprintf(k->why, sizeof k->why, "out of the secure aggregation: %s", why);
    drop_update(c, k);
    k->status = ST_OUT;
    c->cur.failed++;
    fed_msg m;
    memset(&m, 0, sizeof m);
    m.type = FED_MSG_ERROR;
    m.u.error.code = ERR_INVALID;
    m.u.error.text = (char *)(uintptr_t)why;
    m.u.error.round = current_round(c);
    m.u.error.attempt = c->attempt;
    if (k->connected && fed_server_send(c->srv, k->peer, &m) != FED_OK)
        FED_LOG(FED_LOG_DEBUG, "error to %s not sent: %s", k->cn, fed_server_errmsg(c->srv));
}

static fed_err sa_send(fed_coord *c, client *k, uint8_t *msg, size_t len) {
    fed_msg m;
    memset(&m, 0, sizeof m);
    m.type = FED_MSG_SECAGG;
    m.u.secagg.round = current_round(c);
    m.u.secagg.msg = msg;
    m.u.secagg.len = len;
    return fed_server_send(c->srv, k->peer, &m);
}

/* A SecAgg message of participant k: ADVERTISE, SHARES or UNMASK_REPLY, each only in
 * its phase. A refused one takes k out of the round (the protocol state is unchanged). */
static void on_secagg(fed_coord *c, client *k, const fed_msg_secagg *m) {
    if (!c->sa || c->state != FED_COORD_COLLECTING || m->round != current_round(c) ||
        k->status == ST_IDLE || k->status == ST_OUT || k->status == ST_GONE) {
        FED_LOG(FED_LOG_DEBUG, "%s: secagg message for round %" PRIu64 " ignored", k->cn, m->round);
        return;
    }
    int type = m->msg[0];
    fed_err err = FED_OK;
    if (type == FED_SA_MSG_ADVERTISE && c->phase == SA_KEYS && !(k->sa_got & GOT_KEYS)) {
        err = fed_sa_server_add_keys(c->sa, k->sa_id, m->msg, m->len, c->id ? sa_verify : NULL, c);
        if (!err) k->sa_got |= GOT_KEYS;
    } else if (type == FED_SA_MSG_SHARES && c->phase == SA_SHARES && !(k->sa_got & GOT_SHARES)) {
        err = fed_sa_server_add_shares(c->sa, k->sa_id, m->msg, m->len);
        if (!err) k->sa_got |= GOT_SHARES;
    } else if (type == FED_SA_MSG_UNMASK_REPLY && c->phase == SA_UNMASK &&
               k->status == ST_ACCEPTED && !(k->sa_got & GOT_UNMASK)) {
        k->sa_got |= GOT_UNMASK; /* answered, well or not: not waited for any more */
        err = fed_sa_server_add_unmask(c->sa, k->sa_id, m->msg, m->len);
        if (err)
            FED_LOG(FED_LOG_WARN, "round %" PRIu64 ": unmasking reply of %s refused: %s",
                    current_round(c), k->cn, fed_errmsg());
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

static void on_message(fed_coord *c, client *k, const fed_msg *m) {
    switch (m->type) {
    case FED_MSG_UPDATE:
        on_update(c, k, &m->u.update);
        break;
    case FED_MSG_SECAGG:
        on_secagg(c, k, &m->u.secagg);
        break;
    case FED_MSG_ERROR:
        if (m->u.error.code == ERR_INVALID && strstr(m->u.error.text, "no model version") &&
            k->status == ST_WAITING && c->state == FED_COORD_COLLECTING) {
            FED_LOG(FED_LOG_INFO, "%s does not hold model version %" PRIu64 ": resending it", k->cn,
                    c->version);
            k->held = 0;
            if (send_round_start(c, k, true) != FED_OK) k->status = ST_GONE;
        } else if (m->u.error.round == current_round(c) && m->u.error.attempt == c->attempt &&
                   (k->status == ST_WAITING || k->status == ST_PENDING ||
                    k->status == ST_RECEIVING) &&
                   c->state == FED_COORD_COLLECTING) {
            /* The site's round failed (its data, its training) or it cancelled its upload:
             * it has answered, so the round need not wait for it (nor, with ordered
             * uploads, the sites after it). */
            drop_update(c, k);
            k->status = ST_FAILED;
            c->cur.failed++;
            snprintf(k->why, sizeof k->why, "%s", m->u.error.text);
            char name[32];
            FED_LOG(FED_LOG_WARN, "%s: %s failed: %s", round_name(c, name), k->cn, m->u.error.text);
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

/* The statistics round: one site's moments (little-endian floats, as every upload here)
 * into the sum, once they are well-formed limbs counting what its Update claims (the
 * claim itself is bounded by its Hello and max_examples_per_site). */
static fed_err add_moments(fed_coord *c, const client *k, const uint8_t *bytes) {
    const float *v = (const float *)(const void *)bytes; /* a malloc'd buffer: aligned */
    uint64_t count = 0;
    fed_err err = fed_mom_count(v, &count);
    if (!err && (double)count != k->weight)
        err = fed_errorf(FED_ERANGE, "moments of %" PRIu64 " examples, the update claims %.0f",
                         count, k->weight);
    return err ? err : fed_mom_sum_add(&c->st_sum, v);
}

static fed_err on_event(fed_coord *c, const fed_net_event *ev) {
    if (ev->type == FED_NET_NONE) return FED_OK;
    client *k = ev->type == FED_NET_JOINED ? by_cn(c, ev->cn, ev->peer) : by_peer(c, ev->peer);
    if (!k) return ev->type == FED_NET_JOINED ? FED_ENOMEM : FED_OK;
    switch (ev->type) {
    case FED_NET_JOINED:
        k->peer = ev->peer;
        k->connected = true;
        k->told = false; /* a new session has heard nothing yet */
        k->held = 0;     /* nor holds the model: send it again */
        k->hello_examples = ev->msg ? ev->msg->u.hello.train_examples : 0;
        FED_LOG(FED_LOG_INFO, "%s joined (%zu connected, %" PRIu64 " training examples)", k->cn,
                connected_count(c), k->hello_examples);
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
            drop_update(c, k);
            k->status = ST_GONE;
            snprintf(k->why, sizeof k->why, "left mid-round (%s)", ev->reason);
            FED_LOG(FED_LOG_WARN, "round %" PRIu64 ": %s left mid-round (%s)", current_round(c),
                    k->cn, ev->reason);
        } else {
            FED_LOG(FED_LOG_INFO, "%s left (%s)", k->cn, ev->reason);
        }
        if (k->sending) cancel(c, k->peer, k->sending);
        k->sending = 0;
        break;
    case FED_NET_MESSAGE:
        on_message(c, k, ev->msg);
        break;
    case FED_NET_TRANSFER_SENT:
        if (ev->transfer_id == k->sending) {
            k->held = k->sending;
            k->sending = 0;
        }
        break;
    case FED_NET_TRANSFER_DONE:
        if (k->status == ST_RECEIVING && ev->transfer_id == k->up_id) {
            fed_err err;
            if (c->cfg.secagg) { /* summed at once; the buffer is free again */
                err = c->sa ? fed_sa_server_add_masked(c->sa, k->sa_id, c->sa_buf[k->slot],
                                                       (size_t)k->up_bytes)
                            : fed_errorf(FED_EPROTO, "no secure aggregation open");
                c->sa_busy[k->slot] = false;
            } else if (c->in_stats) {
                err = add_moments(c, k, c->sa_buf[k->slot]);
                c->sa_busy[k->slot] = false;
            } else {
                err = fed_agg_slot_commit_buffer(c->agg, k->slot, c->cfg.max_update_norm);
            }
            k->slot = FED_AGG_NO_SLOT;
            if (err) {
                k->status = ST_REJECTED;
                c->cur.rejected++;
                reject(c, k, NULL, code_of(err), "%s", fed_errmsg());
            } else {
                k->status = ST_ACCEPTED;
                c->cur.returned++;
                k->commit_seq = c->cur.returned;
                FED_LOG(FED_LOG_DEBUG, "round %" PRIu64 ": update from %s accepted (weight %g)",
                        current_round(c), k->cn, k->weight);
            }
        }
        break;
    case FED_NET_TRANSFER_FAILED:
        if (k->status == ST_RECEIVING && ev->transfer_id == k->up_id) {
            if (bytes_upload(c))
                c->sa_busy[k->slot] = false;
            else
                fed_agg_slot_abort(c->agg, k->slot);
            k->slot = FED_AGG_NO_SLOT;
            k->status = ST_REJECTED;
            c->cur.rejected++;
            reject(c, k, NULL, ERR_DIGEST, "delta: %s", ev->reason);
        }
        break;
    case FED_NET_NONE:
        break;
    }
    return FED_OK;
}

/* ---- the state machine ------------------------------------------------------------------ */

/* Ends the current attempt: every update in flight is dropped, every client idle. */
static void end_attempt(fed_coord *c) {
    for (size_t i = 0; i < c->ncl; i++) {
        drop_update(c, &c->cl[i]);
        c->cl[i].status = ST_IDLE;
        c->cl[i].sa_got = 0;
        c->cl[i].why[0] = '\0';
    }
    fed_agg_begin_round(c->agg);
    fed_sa_server_destroy(&c->sa);
    if (c->st_sum.limbs) { /* a new attempt of the statistics round sums afresh */
        memset(c->st_sum.limbs, 0, c->st_sum.len * sizeof *c->st_sum.limbs);
        c->st_sum.sites = 0;
    }
}

static int cmp_cn(const void *a, const void *b) {
    return strcmp((*(client *const *)a)->cn, (*(client *const *)b)->cn);
}

/* Secure aggregation of a new attempt over the k sampled clients among ready[0..n) (in
 * CN order): participant ids in that order, the round's parameters, a fresh graph seed. */
static fed_err sa_begin(fed_coord *c, client **ready, size_t n, size_t k) {
    if (k < 2 || k > FED_SA_CLIENTS_MAX)
        return fed_errorf(FED_EINVAL, "secagg: %zu sampled clients (must be 2..%d)", k,
                          FED_SA_CLIENTS_MAX);
    fed_sa_params *p = &c->sa_params;
    fed_sa_params_default(p, (uint32_t)k, c->in_stats ? fed_mom_len(c->st_groups) : c->ntrainable);
    if (c->cfg.secagg_degree) p->degree = c->cfg.secagg_degree;
    if (c->cfg.secagg_threshold) {
        p->threshold = c->cfg.secagg_threshold;
    } else if (c->cfg.secagg_degree) { /* the smallest valid threshold of that degree */
        p->threshold = (fed_sa_degree(p) + 1) / 2 + 1;
    }
    if (c->cfg.secagg_clip > 0) p->clip_range = c->cfg.secagg_clip;
    if (c->cfg.secagg_quant) p->quant_range = c->cfg.secagg_quant;
    if (c->in_stats) { /* limbs in [0, 2^21) travel unchanged (core/moments.h) */
        p->clip_range = FED_MOM_CLIP;
        p->quant_range = FED_MOM_QUANT;
    }
    p->round = current_round(c);
    fed_err err = fed_sa_params_check(p);
    if (!err) err = fed_sa_random_bytes(p->graph_seed, sizeof p->graph_seed);
    if (err) return fed_errprefix(err, "secagg with %zu sampled clients", k);
    size_t *map = fed_realloc(c->sa_cl, k * sizeof *map);
    if (!map) return FED_ENOMEM;
    c->sa_cl = map;
    uint32_t id = 0;
    for (size_t i = 0; i < n; i++) {
        if (ready[i]->status != ST_WAITING) continue;
        ready[i]->sa_id = id;
        ready[i]->sa_got = 0;
        c->sa_cl[id++] = (size_t)(ready[i] - c->cl);
    }
    fed_sa_server_destroy(&c->sa);
    if ((err = fed_sa_server_new(&c->sa, p))) return err;
    c->phase = SA_KEYS;
    c->sa_deadline = now_ms() + c->cfg.secagg_phase_ms;
    c->sa_survivors = 0;
    c->cur.secagg_dropped = 0;
    return FED_OK;
}

static fed_err do_sample(fed_coord *c) {
    size_t n = connected_count(c);
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
    if (k > n || c->in_stats) k = n; /* the statistics round asks everyone */
    end_attempt(c);
    if (c->in_stats && !c->st_sum.limbs) {
        fed_err err = fed_mom_sum_init(&c->st_sum, c->st_groups);
        if (err) {
            fed_free(ready);
            fed_free(idx);
            return err;
        }
    }
    if (c->attempt == 0) {
        fed_net_stats st;
        fed_server_stats(c->srv, &st);
        c->rx0 = st.bytes_received;
        c->tx0 = st.bytes_sent;
        c->round_t0 = now_ms();
    }
    c->attempt++;
    c->sample_seed = fed_mix64(c->cfg.seed ^ fed_mix64(current_round(c) * 1000003u + c->attempt));
    fed_rng rng;
    fed_rng_seed(&rng, c->sample_seed);
    for (size_t i = 0; i < n; i++) idx[i] = i;
    fed_rng_shuffle(&rng, idx, n);
    for (size_t i = 0; i < k; i++) ready[idx[i]]->status = ST_WAITING;
    /* The sample in CN order (ready is sorted): the upload order of ordered_uploads. */
    c->norder = 0;
    if (c->cfg.ordered_uploads && c->caporder < k) {
        size_t *o = fed_realloc(c->order, k * sizeof *o);
        if (!o) {
            fed_free(ready);
            fed_free(idx);
            return FED_ENOMEM;
        }
        c->order = o;
        c->caporder = k;
    }
    for (size_t i = 0; c->cfg.ordered_uploads && i < n; i++)
        if (ready[i]->status == ST_WAITING) c->order[c->norder++] = (size_t)(ready[i] - c->cl);
    fed_err err = c->cfg.secagg ? sa_begin(c, ready, n, k) : FED_OK;
    fed_free(ready);
    fed_free(idx);
    if (err) return err;
    c->cur.sampled = k;
    c->population = n;
    c->cur.returned = c->cur.rejected = c->cur.failed = 0;
    char name[32];
    FED_LOG(FED_LOG_INFO, "%s attempt %" PRIu64 ": sampled %zu of %zu clients (seed %" PRIu64 ")",
            round_name(c, name), c->attempt, k, n, c->sample_seed);
    return FED_OK;
}

static void do_broadcast(fed_coord *c) {
    c->deadline = now_ms() + c->cfg.deadline_ms;
    c->min_fit_at = 0;
    for (size_t i = 0; i < c->ncl; i++) {
        client *k = &c->cl[i];
        if (k->status != ST_WAITING) continue;
        fed_err err = send_round_start(c, k, false);
        if (err) {
            FED_LOG(FED_LOG_WARN, "round %" PRIu64 ": cannot start %s: %s", current_round(c), k->cn,
                    fed_server_errmsg(c->srv));
            snprintf(k->why, sizeof k->why, "could not be sent the round: %s",
                     fed_server_errmsg(c->srv));
            k->status = ST_GONE;
        }
    }
    fed_net_stats st;
    fed_server_stats(c->srv, &st);
    c->last_rx = st.bytes_received;
    c->last_tx = st.bytes_sent;
}

/* ---- failed attempts ------------------------------------------------------------------ */

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
 * row with the same main reason, the end of the federation (give_up set). */
static fed_coord_state attempt_failed(fed_coord *c, const char *what) {
    char reasons[600], main[WHY_MAX], name[32];
    attempt_reasons(c, reasons, sizeof reasons, main, sizeof main);
    if (!main[0]) snprintf(main, sizeof main, "%s", what);
    if (c->same_fails > 0 && strcmp(main, c->fail_why) == 0) {
        c->same_fails++;
    } else {
        c->same_fails = 1;
        snprintf(c->fail_why, sizeof c->fail_why, "%s", main);
    }
    end_attempt(c);
    uint32_t most = c->cfg.max_failed_attempts;
    if (most && c->same_fails >= most) {
        FED_LOG(FED_LOG_WARN, "%s attempt %" PRIu64 ": %s; %s", round_name(c, name), c->attempt,
                what, reasons);
        snprintf(c->give_up, sizeof c->give_up,
                 "%s failed %" PRIu32 " attempts in a row for the same reason: %s",
                 round_name(c, name), c->same_fails, main);
        return FED_COORD_WAITING;
    }
    int64_t delay = c->cfg.retry_backoff_ms;
    for (uint64_t a = 1; a < c->attempt && delay < c->cfg.retry_backoff_max_ms; a++) delay *= 2;
    if (delay > c->cfg.retry_backoff_max_ms) delay = c->cfg.retry_backoff_max_ms;
    c->retry_at = now_ms() + delay;
    FED_LOG(FED_LOG_WARN, "%s attempt %" PRIu64 ": %s; %s; retrying in %.3g s", round_name(c, name),
            c->attempt, what, reasons, (double)delay / 1000.0);
    return FED_COORD_WAITING;
}

/* Gives up the attempt (secure aggregation cannot finish): retried like one short of
 * min_fit. */
static fed_coord_state sa_abort(fed_coord *c, const char *why) {
    char what[400];
    snprintf(what, sizeof what, "secure aggregation cannot finish: %s", why);
    return attempt_failed(c, what);
}

typedef fed_err (*sa_for_fn)(fed_sa_server *, uint32_t, uint8_t **, size_t *);

/* Ends a collection phase: sends each participant still in (status in `want`) its
 * message of the next phase (for_fn); one the protocol has excluded is told so. Returns
 * false (and *next) when the attempt aborts. */
static bool sa_send_phase(fed_coord *c, sa_for_fn for_fn, cstatus want, const char *what,
                          fed_coord_state *next) {
    for (uint32_t id = 0; id < c->sa_params.n; id++) {
        client *k = &c->cl[c->sa_cl[id]];
        if (k->status != want) continue;
        uint8_t *msg = NULL;
        size_t len = 0;
        fed_err err = for_fn(c->sa, id, &msg, &len);
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
            FED_LOG(FED_LOG_WARN, "round %" PRIu64 ": cannot reach %s: %s", current_round(c), k->cn,
                    fed_server_errmsg(c->srv));
            snprintf(k->why, sizeof k->why, "unreachable: %s", fed_server_errmsg(c->srv));
            drop_update(c, k);
            k->status = ST_GONE;
        }
    }
    return true;
}

/* The statistics round's secure sum: the exact fixed-point sums of the survivors' limbs
 * into st_sum. */
static fed_err sa_finalize_moments(fed_coord *c, size_t *survivors) {
    size_t n = fed_mom_len(c->st_groups);
    float *sum = fed_mallocarray(n, sizeof *sum);
    uint32_t *fixed = fed_mallocarray(n, sizeof *fixed);
    fed_err err = sum && fixed ? FED_OK : FED_ENOMEM;
    if (!err) err = fed_sa_server_finalize(c->sa, sum, fixed, n, survivors);
    if (!err) err = fed_mom_sum_add_fixed(&c->st_sum, fixed, *survivors);
    fed_free(sum);
    fed_free(fixed);
    return err;
}

/* The key exchange and unmasking phases of a securely aggregated attempt; the masked
 * uploads between them are collected like plain updates (collect_updates). */
static fed_coord_state sa_collect(fed_coord *c) {
    int64_t now = now_ms();
    bool pending = false;
    for (uint32_t id = 0; id < c->sa_params.n; id++) {
        const client *k = &c->cl[c->sa_cl[id]];
        if (c->phase == SA_KEYS)
            pending |= k->status == ST_WAITING && !(k->sa_got & GOT_KEYS);
        else if (c->phase == SA_SHARES)
            pending |= k->status == ST_WAITING && !(k->sa_got & GOT_SHARES);
        else
            pending |= k->status == ST_ACCEPTED && k->connected && !(k->sa_got & GOT_UNMASK);
    }
    if (pending && now < c->sa_deadline) return FED_COORD_COLLECTING;
    fed_coord_state next = FED_COORD_COLLECTING;
    switch (c->phase) {
    case SA_KEYS:
        if (!sa_send_phase(c, fed_sa_server_keys_for, ST_WAITING, "keys", &next)) return next;
        c->phase = SA_SHARES;
        c->sa_deadline = now + c->cfg.secagg_phase_ms;
        return FED_COORD_COLLECTING;
    case SA_SHARES:
        if (!sa_send_phase(c, fed_sa_server_shares_for, ST_WAITING, "shares", &next)) return next;
        c->phase = SA_MASKED; /* now collect_updates, under the round's deadline */
        return FED_COORD_COLLECTING;
    case SA_UNMASK: {
        size_t survivors = 0;
        fed_err err =
            c->in_stats ? sa_finalize_moments(c, &survivors)
                        : fed_sa_server_finalize(c->sa, c->sa_sum, NULL, c->ntrainable, &survivors);
        if (err) {
            char why[300];
            snprintf(why, sizeof why, "%s", fed_errmsg());
            return sa_abort(c, why);
        }
        size_t shared = 0;
        for (uint32_t id = 0; id < c->sa_params.n; id++)
            shared += (c->cl[c->sa_cl[id]].sa_got & GOT_SHARES) != 0;
        c->sa_survivors = survivors;
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
static fed_coord_state sa_begin_unmask(fed_coord *c) {
    for (uint32_t id = 0; id < c->sa_params.n; id++) {
        client *k = &c->cl[c->sa_cl[id]];
        if (k->status == ST_WAITING || k->status == ST_PENDING || k->status == ST_RECEIVING) {
            drop_update(c, k);
            k->status = ST_OUT; /* late: its update will be refused */
        }
    }
    fed_coord_state next = FED_COORD_COLLECTING;
    c->phase = SA_UNMASK;
    c->sa_deadline = now_ms() + c->cfg.secagg_phase_ms;
    if (!sa_send_phase(c, fed_sa_server_unmask_for, ST_ACCEPTED, "masked update", &next))
        return next;
    return sa_collect(c); /* closes at once if nobody is left to ask */
}

static fed_coord_state collect_updates(fed_coord *c);

/* COLLECTING: the secure aggregation phases around the uploads, or just the uploads. */
static fed_coord_state collect(fed_coord *c) {
    if (c->sa && c->phase != SA_MASKED) return sa_collect(c);
    fed_coord_state next = collect_updates(c);
    if (next == FED_COORD_AGGREGATING && c->sa) return sa_begin_unmask(c);
    return next;
}

/* COLLECTING: slots for waiting uploads, progress, the close and the deadline. Returns
 * the next state. */
static fed_coord_state collect_updates(fed_coord *c) {
    bool busy = false, open = false;
    if (c->cfg.ordered_uploads) {
        /* One upload at a time, in CN order: the first sampled client still expected. */
        for (size_t j = 0; j < c->norder; j++) {
            client *k = &c->cl[c->order[j]];
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
    if (bytes_upload(c)) as.accepted = c->cur.returned; /* summed on arrival, not by agg */
    int64_t now = now_ms();
    bool enough = as.accepted >= c->cfg.min_fit;
    if (enough && !open) return FED_COORD_AGGREGATING; /* the whole sample answered */
    if (enough && c->min_fit_at == 0) c->min_fit_at = now;
    if (enough && c->cfg.wait_after_min_ms >= 0 && now - c->min_fit_at >= c->cfg.wait_after_min_ms)
        return FED_COORD_AGGREGATING;
    fed_net_stats st;
    fed_server_stats(c->srv, &st);
    if (busy && (st.bytes_received != c->last_rx || st.bytes_sent != c->last_tx))
        c->deadline = now + c->cfg.deadline_ms; /* transfers progress: push the deadline back */
    c->last_rx = st.bytes_received;
    c->last_tx = st.bytes_sent;
    if (now < c->deadline && open) return FED_COORD_COLLECTING;
    if (enough) return FED_COORD_AGGREGATING;
    char what[160];
    snprintf(what, sizeof what, "%s with %zu of %zu updates accepted (min_fit %zu)",
             open ? "deadline passed" : "no update can still come", as.accepted, c->cur.sampled,
             c->cfg.min_fit);
    return attempt_failed(c, what);
}

static fed_err aggregate(fed_coord *c) {
    /* The weights change: no transfer may still read them. */
    for (size_t i = 0; i < c->ncl; i++) {
        client *k = &c->cl[i];
        if (k->sending) cancel(c, k->peer, k->sending);
        k->sending = 0;
        if (k->status == ST_PENDING || k->status == ST_RECEIVING || k->status == ST_WAITING) {
            drop_update(c, k);
            k->status = ST_IDLE; /* late: its update will find the round closed */
        }
    }
    float *mean = NULL;
    fed_err err = FED_OK;
    fed_agg_stats as;
    double z = c->cfg.dp_noise;
    if (c->cfg.secagg) { /* the decoded sum of the survivors: their mean, unweighted */
        memset(&as, 0, sizeof as);
        as.accepted = c->sa_survivors;
        as.weight = (double)c->sa_survivors;
        mean = c->sa_sum;
        for (size_t i = 0; i < c->ntrainable; i++) mean[i] /= (float)c->sa_survivors;
        /* Each of the n participants added noise of std z S / sqrt(n): the m summed carry
         * z S sqrt(m / n), a multiplier of z sqrt(m / n) for the sum's sensitivity S. */
        z *= sqrt((double)c->sa_survivors / (double)c->sa_params.n);
        fed_sa_server_destroy(&c->sa);
    } else {
        if ((err = fed_agg_result_mut(c->agg, &mean))) return err;
        as = fed_agg_get_stats(c->agg);
    }
    c->cur.clipped = as.clipped;
    c->cur.clip = c->cfg.dp_clip > 0 ? c->clip_now : 0.0;
    c->cur.epsilon = (double)NAN;
    if (c->acc && !c->cfg.secagg) {
        double m = (double)as.accepted, z_update = c->cfg.dp_noise, count_std = 0;
        if (c->cfg.dp_target_quantile > 0) split_noise(c, &count_std, &z_update);
        if ((err = add_noise(c, mean, c->ntrainable, z_update * c->clip_now / m, 0))) return err;
        if (c->cfg.dp_target_quantile > 0) { /* the next round's bound */
            float count = (float)(m - (double)as.clipped);
            if ((err = add_noise(c, &count, 1, count_std, 1))) return err;
            double next = 0;
            if ((err = fed_dp_adaptive_clip_update(c->clip_now, (double)count / m,
                                                   c->cfg.dp_target_quantile, c->cfg.dp_clip_lr,
                                                   &next)))
                return err;
            c->clip_now = next;
            fed_agg_set_clip(c->agg, next);
        }
    }
    if (c->acc) {
        double q = (double)c->cur.sampled / (double)(c->population ? c->population : 1);
        if (z > 0 && (err = fed_dp_accountant_step(c->acc, q, z, 1))) return err;
        c->cur.epsilon = (double)INFINITY; /* clipping alone */
        if (c->cfg.dp_noise > 0 &&
            (err = fed_dp_accountant_epsilon(c->acc, c->cfg.dp_delta, FED_DP_IMPROVED,
                                             &c->cur.epsilon, NULL)))
            return err;
    }
    float *w = fed_model_params(c->model);
    size_t off = 0;
    for (size_t i = 0; i < c->ntensors; i++) {
        const fed_tensor *t = fed_model_tensor(c->model, i);
        if (!t->trainable) continue;
        fed_strategy_apply(c->strat, off, t->numel, w + t->offset, mean + off);
        off += t->numel;
    }
    fed_strategy_end_round(c->strat);
    c->version++;
    update_sha(c);
    c->cur.examples = as.weight;
    return FED_OK;
}

/* Ends the statistics round: the federation's standardizer from the summed moments
 * becomes the manifest's input transform and the central evaluation's. Moments that do
 * not make one (a site that lied inside a secure sum) fail the attempt. */
static fed_coord_state finish_stats(fed_coord *c) {
    size_t g = c->st_groups, dim = fed_model_input_size(c->model), sites = c->st_sum.sites;
    double *mean = fed_mallocarray(2 * g, sizeof *mean);
    uint64_t n = 0;
    fed_standardizer *st = NULL;
    char *json = NULL;
    fed_err err = mean ? FED_OK : FED_ENOMEM;
    if (!err) err = fed_mom_sum_result(&c->st_sum, dim, &n, mean, mean + g);
    if (!err) err = fed_std_from_moments(&st, dim, g, mean, mean + g);
    if (!err) err = fed_std_to_json(st, &json);
    fed_free(mean);
    if (err) {
        fed_std_destroy(&st);
        char what[300];
        snprintf(what, sizeof what, "the summed statistics make no standardizer: %s", fed_errmsg());
        return attempt_failed(c, what);
    }
    FED_LOG(FED_LOG_INFO,
            "statistics round: the federation's input standardisation from %" PRIu64
            " examples of %zu sites (%zu %s; first mean %.6g std %.6g)",
            n, sites, g, g == dim ? "features" : "channels", (double)st->mean[0],
            (double)st->std[0]);
    fed_std_destroy(&st);
    fed_free(c->transform);
    c->transform = json;
    c->transform_ours = true;
    end_attempt(c);
    c->in_stats = false;
    c->attempt = 0;
    c->same_fails = 0;
    c->retry_at = 0;
    fed_mom_sum_free(&c->st_sum);
    if ((err = standardize_eval(c))) {
        snprintf(c->give_up, sizeof c->give_up, "%s", fed_errmsg());
        return FED_COORD_DONE;
    }
    return FED_COORD_WAITING;
}

static fed_err evaluate(fed_coord *c) {
    c->cur.central_loss = c->cur.central_acc = (double)NAN;
    if (c->cfg.eval_data) {
        fed_eval_result r;
        memset(&r, 0, sizeof r);
        fed_loss_config loss = {FED_LOSS_SOFTMAX_CE, 0.0f};
        const fed_dataset *d = c->eval_own ? c->eval_own : c->cfg.eval_data;
        fed_err err = fed_evaluate(c->model, d, c->cfg.eval_batch, &loss, &r);
        if (err) {
            fed_eval_result_free(&r);
            return fed_errprefix(err, "central evaluation");
        }
        c->cur.central_loss = r.loss;
        c->cur.central_acc = r.accuracy;
        fed_eval_result_free(&r);
    }
    double wsum = 0, l = 0, a = 0, tw = 0, tl = 0;
    for (size_t i = 0; i < c->ncl; i++) {
        const client *k = &c->cl[i];
        if (k->status == ST_ACCEPTED && isfinite(k->tloss)) {
            tw += (double)k->weight;
            tl += (double)k->weight * k->tloss;
        }
        if (k->status != ST_ACCEPTED || !isfinite(k->gloss) || !isfinite(k->gacc)) continue;
        if (k->geval == 0) continue; /* a site without a test split evaluated nothing */
        double w = (double)k->weight;
        if (isfinite(k->geval) && k->geval > 0) w = k->geval;
        wsum += w;
        l += w * k->gloss;
        a += w * k->gacc;
    }
    c->cur.fed_loss = wsum > 0 ? l / wsum : (double)NAN;
    c->cur.fed_acc = wsum > 0 ? a / wsum : (double)NAN;
    c->cur.train_loss = tw > 0 ? tl / tw : (double)NAN;
    return FED_OK;
}

static void json_num(FILE *f, const char *key, double v) {
    if (isfinite(v))
        fprintf(f, ",\"%s\":%.9g", key, v);
    else
        fprintf(f, ",\"%s\":null", key);
}

static void write_metrics(fed_coord *c) {
    if (c->reopen_req) {
        c->reopen_req = 0;
        if (open_metrics(c) != FED_OK) FED_LOG(FED_LOG_ERROR, "metrics: %s", fed_errmsg());
    }
    FILE *f = c->metrics;
    if (!f) return;
    const fed_coord_round_stats *s = &c->cur;
    fprintf(f,
            "{\"time\":%lld,\"round\":%" PRIu64 ",\"model_version\":%" PRIu64
            ",\"attempts\":%" PRIu64 ",\"sampling_seed\":%" PRIu64 ",\"sample_seed\":%" PRIu64
            ",\"strategy\":\"%s\",\"sampled_clients\":[",
            (long long)time(NULL), s->round, s->model_version, s->attempts, c->cfg.seed,
            s->sample_seed, fed_strategy_name(c->cfg.strategy.kind));
    bool first = true;
    for (size_t i = 0; i < c->ncl; i++) {
        const client *k = &c->cl[i];
        if (k->status == ST_IDLE) continue;
        fputs(first ? "\"" : ",\"", f);
        for (const char *p = k->cn; *p; p++) {
            if (*p == '"' || *p == '\\') fputc('\\', f);
            if ((unsigned char)*p >= 0x20) fputc(*p, f);
        }
        fputc('"', f);
        first = false;
    }
    /* The accepted updates in the order they were folded, with their weights: with the
     * sites' own copies of their deltas this replays the aggregate bit for bit. */
    fputs("],\"accepted\":[", f);
    for (size_t seq = 1; seq <= s->returned; seq++) {
        for (size_t i = 0; i < c->ncl; i++) {
            const client *k = &c->cl[i];
            if (k->status != ST_ACCEPTED || k->commit_seq != seq) continue;
            fputs(seq > 1 ? ",{\"cn\":\"" : "{\"cn\":\"", f);
            for (const char *p = k->cn; *p; p++) {
                if (*p == '"' || *p == '\\') fputc('\\', f);
                if ((unsigned char)*p >= 0x20) fputc(*p, f);
            }
            fprintf(f, "\",\"examples\":%.9g}", (double)k->weight);
        }
    }
    fprintf(f, "],\"sampled\":%zu,\"returned\":%zu,\"rejected\":%zu,\"failed\":%zu", s->sampled,
            s->returned, s->rejected, s->failed);
    json_num(f, "examples", s->examples);
    json_num(f, "central_loss", s->central_loss);
    json_num(f, "central_accuracy", s->central_acc);
    json_num(f, "train_loss", s->train_loss);
    json_num(f, "federated_loss", s->fed_loss);
    json_num(f, "federated_accuracy", s->fed_acc);
    fprintf(f, ",\"bytes_in\":%" PRIu64 ",\"bytes_out\":%" PRIu64, s->bytes_in, s->bytes_out);
    json_num(f, "seconds", s->seconds);
    if (c->cfg.secagg)
        fprintf(f, ",\"secagg_summed\":%zu,\"secagg_dropped\":%zu", s->returned, s->secagg_dropped);
    if (c->acc) {
        json_num(f, "epsilon", s->epsilon);
        fprintf(f, ",\"dp_delta\":%.17g,\"dp_clipped\":%zu,\"dp_clip\":%.9g", c->cfg.dp_delta,
                s->clipped, s->clip);
    }
    fputs("}\n", f);
    if (fflush(f) != 0)
        FED_LOG(FED_LOG_ERROR, "metrics %s: %s", c->cfg.metrics_file, strerror(errno));
}

static fed_err checkpoint(fed_coord *c) {
    fed_coord_round_stats *s = &c->cur;
    s->round = current_round(c);
    s->model_version = c->version;
    s->attempts = c->attempt;
    s->sample_seed = c->sample_seed;
    fed_net_stats st;
    fed_server_stats(c->srv, &st);
    s->bytes_in = st.bytes_received - c->rx0;
    s->bytes_out = st.bytes_sent - c->tx0;
    s->seconds = (double)(now_ms() - c->round_t0) / 1000.0;
    if (c->cfg.checkpoint_dir) {
        fed_meta *extra = NULL;
        fed_err err = c->acc || c->transform_ours ? fed_meta_new(&extra) : FED_OK;
        if (!err && c->acc) err = accountant_meta(c->acc, c->clip_now, extra);
        if (!err && c->transform_ours) err = fed_meta_set(extra, META_STD, c->transform);
        if (!err)
            err = fed_ckpt_write(c->cfg.checkpoint_dir, s->round, c->version, c->model, c->strat,
                                 c->cfg.seed, c->cfg.keep_checkpoints, extra);
        fed_meta_destroy(&extra);
        if (err) return fed_errprefix(err, "checkpoint of round %" PRIu64, s->round);
    }
    char dp[96] = "", sa[96] = "";
    if (c->acc && c->cfg.secagg)
        snprintf(dp, sizeof dp, "; DP epsilon %.4g at delta %g (clipped and noised at the sites)",
                 s->epsilon, c->cfg.dp_delta);
    else if (c->acc)
        snprintf(dp, sizeof dp, "; DP epsilon %.4g at delta %g (%zu of %zu clipped at %.4g)",
                 s->epsilon, c->cfg.dp_delta, s->clipped, s->returned, s->clip);
    if (c->cfg.secagg)
        snprintf(sa, sizeof sa, "; secure sum of %zu (%zu dropped after sharing keys)", s->returned,
                 s->secagg_dropped);
    char central[64] = "central -";
    if (!isnan(s->central_loss))
        snprintf(central, sizeof central, "central loss %.4f acc %.4f", s->central_loss,
                 s->central_acc);
    FED_LOG(FED_LOG_INFO,
            "round %" PRIu64 "/%" PRIu64 ": clients %zu sampled, %zu returned, %zu rejected, "
            "%zu failed; "
            "%.0f examples; train loss %.4f; %s; federated loss %.4f acc %.4f; "
            "bytes in %" PRIu64 " out %" PRIu64 "; %.2f s%s%s",
            s->round, c->cfg.rounds, s->sampled, s->returned, s->rejected, s->failed, s->examples,
            s->train_loss, central, s->fed_loss, s->fed_acc, s->bytes_in, s->bytes_out, s->seconds,
            sa, dp);
    write_metrics(c);
    c->last = *s;
    if (c->cfg.on_round) c->cfg.on_round(c->cfg.on_round_user, s);
    c->rounds_done++;
    c->attempt = 0;
    c->same_fails = 0;
    c->retry_at = 0;
    end_attempt(c);
    return FED_OK;
}

/* The end of the coordinator's work: the open attempt dropped, no model transfer left. */
static void abandon(fed_coord *c) {
    end_attempt(c);
    for (size_t i = 0; i < c->ncl; i++) {
        client *k = &c->cl[i];
        if (k->sending) cancel(c, k->peer, k->sending);
        k->sending = 0;
    }
    c->state = FED_COORD_DONE;
}

/* Stops: abandons an open round, exports the model, says Bye; finished tells the sites
 * whether the federation is over (they exit) or only this process stops (a signal: they
 * reconnect and rejoin the restarted coordinator). */
static fed_err finish(fed_coord *c, const char *why, bool finished) {
    abandon(c);
    FED_LOG(FED_LOG_INFO, "stopping after %" PRIu64 " rounds: %s", c->rounds_done, why);
    fed_err err = FED_OK;
    if (c->cfg.out) {
        fed_meta *meta = NULL;
        char buf[32];
        err = fed_meta_new(&meta);
        /* What the initial model's file said of its inputs and classes still holds. */
        for (size_t i = 0; !err && c->cfg.model_meta && i < fed_meta_count(c->cfg.model_meta); i++)
            err = fed_meta_set(meta, fed_meta_key(c->cfg.model_meta, i),
                               fed_meta_value(c->cfg.model_meta, i));
        if (!err && c->transform_ours) err = fed_meta_set(meta, META_STD, c->transform);
        snprintf(buf, sizeof buf, "%" PRIu64, c->rounds_done);
        if (!err) err = fed_meta_set(meta, "fedtune.round", buf);
        snprintf(buf, sizeof buf, "%" PRIu64, c->version);
        if (!err) err = fed_meta_set(meta, "fedtune.model_version", buf);
        if (!err)
            err = fed_meta_set(meta, "fedtune.strategy", fed_strategy_name(c->cfg.strategy.kind));
        if (!err && c->acc) {
            char dp[256];
            double eps = 0;
            if (!(err = spent(c, &eps))) {
                char e[32] = "null"; /* infinite: no noise */
                if (isfinite(eps)) snprintf(e, sizeof e, "%.17g", eps);
                snprintf(dp, sizeof dp,
                         "{\"clip\":%.17g,\"noise_multiplier\":%.17g,\"delta\":%.17g,"
                         "\"epsilon\":%s,\"rounds\":%" PRIu64 ",\"accountant\":\"rdp, "
                         "sampled gaussian, improved conversion\"}",
                         c->cfg.dp_clip, c->cfg.dp_noise, c->cfg.dp_delta, e, c->rounds_done);
                err = fed_meta_set(meta, "fedtune.dp", dp);
            }
        }
        if (!err && c->cfg.secagg) {
            char sa[256];
            const fed_sa_params *p = &c->sa_params; /* of the last attempt */
            snprintf(sa, sizeof sa,
                     "{\"protocol\":\"secagg+\",\"participants\":%u,\"degree\":%u,"
                     "\"threshold\":%u,\"clip_range\":%.17g,\"quant_range\":%u,"
                     "\"weights\":\"uniform\"}",
                     (unsigned)p->n, (unsigned)fed_sa_degree(p), (unsigned)p->threshold,
                     p->clip_range, (unsigned)p->quant_range);
            err = fed_meta_set(meta, "fedtune.secagg", sa);
        }
        if (!err) err = fed_model_save(c->model, c->cfg.out, meta);
        fed_meta_destroy(&meta);
        if (err)
            err = fed_errprefix(err, "export");
        else
            FED_LOG(FED_LOG_INFO, "final model written to %s", c->cfg.out);
    }
    say_bye(c, why, finished);
    if (!err && finished && c->ended_before && c->cfg.linger_ms > 0) {
        c->state = FED_COORD_LINGERING;
        c->linger_until = now_ms() + c->cfg.linger_ms;
        FED_LOG(FED_LOG_INFO,
                "the last round was done before this start: telling reconnecting sites for up "
                "to %.3g s",
                (double)c->cfg.linger_ms / 1000.0);
    }
    return err;
}

/* LINGERING: every site that (re)joins hears Bye{finished}; done when min_clients were
 * told or the time is up. */
static void linger(fed_coord *c) {
    fed_msg m;
    memset(&m, 0, sizeof m);
    m.type = FED_MSG_BYE;
    m.u.bye.reason = (char *)"all rounds done";
    m.u.bye.finished = true;
    size_t told = tell_bye(c, &m, true);
    if (told < c->cfg.min_clients && now_ms() < c->linger_until) return;
    let_byes_leave(c, &m);
    c->state = FED_COORD_DONE;
}

/* Ends the federation because its rounds cannot succeed: no export (the checkpoints hold
 * the last good model), the sites are told it is over, and the caller gets the reason. */
static fed_err give_up(fed_coord *c) {
    abandon(c);
    FED_LOG(FED_LOG_ERROR, "stopping after %" PRIu64 " rounds: %s", c->rounds_done, c->give_up);
    char bye[sizeof c->give_up + 32];
    snprintf(bye, sizeof bye, "federation stopped: %s", c->give_up);
    say_bye(c, bye, true);
    return fed_errorf(FED_ECANCELED, "%s", c->give_up);
}

/* Epsilon after one more round sampled from the clients connected now. */
static fed_err next_epsilon(const fed_coord *c, double *eps) {
    size_t n = connected_count(c);
    size_t k = (size_t)ceil(c->cfg.fraction * (double)n - 1e-9);
    if (k < c->cfg.min_fit) k = c->cfg.min_fit;
    if (k > n) k = n;
    size_t norders;
    const double *rdp = fed_dp_accountant_rdp(c->acc, &norders);
    fed_dp_accountant *tmp = NULL;
    fed_err err = fed_dp_accountant_new(&tmp);
    if (!err) err = fed_dp_accountant_load(tmp, rdp, norders, fed_dp_accountant_steps(c->acc));
    if (!err)
        err = fed_dp_accountant_step(tmp, (double)k / (double)(n ? n : 1), c->cfg.dp_noise, 1);
    if (!err) err = fed_dp_accountant_epsilon(tmp, c->cfg.dp_delta, FED_DP_IMPROVED, eps, NULL);
    fed_dp_accountant_destroy(&tmp);
    return err;
}

/* Runs the states that need no event until one waits for the network. */
static fed_err advance(fed_coord *c) {
    for (;;) {
        fed_err err;
        switch (c->state) {
        case FED_COORD_WAITING:
            if (c->rounds_done >= c->cfg.rounds) return finish(c, "all rounds done", true);
            if (connected_count(c) < c->cfg.min_clients) return FED_OK;
            if (c->retry_at && now_ms() < c->retry_at) return FED_OK; /* backing off */
            if (c->rounds_done == 0 && c->cfg.input_stats && !c->transform) c->in_stats = true;
            if (c->cfg.target_epsilon > 0) {
                double next = 0;
                if ((err = next_epsilon(c, &next))) return err;
                if (next > c->cfg.target_epsilon) {
                    char why[160];
                    snprintf(why, sizeof why,
                             "privacy budget: another round would spend epsilon %.4g > %.4g", next,
                             c->cfg.target_epsilon);
                    return finish(c, why, true);
                }
            }
            c->state = FED_COORD_SAMPLING;
            break;
        case FED_COORD_SAMPLING:
            if ((err = do_sample(c))) return err;
            c->state = FED_COORD_BROADCASTING;
            break;
        case FED_COORD_BROADCASTING:
            do_broadcast(c);
            c->state = FED_COORD_COLLECTING;
            break;
        case FED_COORD_COLLECTING: {
            fed_coord_state next = collect(c);
            if (c->give_up[0]) return give_up(c);
            if (next == FED_COORD_COLLECTING) return FED_OK;
            c->state = next;
            if (next == FED_COORD_WAITING) return FED_OK;
            break;
        }
        case FED_COORD_AGGREGATING:
            if (c->in_stats) { /* round 0: the transform, then round 1 */
                c->state = finish_stats(c);
                if (c->give_up[0]) return give_up(c);
                break;
            }
            if ((err = aggregate(c))) return err;
            c->state = FED_COORD_EVALUATING;
            break;
        case FED_COORD_EVALUATING:
            if ((err = evaluate(c))) return err;
            c->state = FED_COORD_CHECKPOINTING;
            break;
        case FED_COORD_CHECKPOINTING:
            if ((err = checkpoint(c))) return err;
            if (c->cfg.target_accuracy > 0 && c->cur.central_acc >= c->cfg.target_accuracy)
                return finish(c, "target accuracy reached", true);
            c->state = FED_COORD_WAITING;
            break;
        case FED_COORD_LINGERING:
            linger(c);
            return FED_OK;
        case FED_COORD_DONE:
            return FED_OK;
        }
    }
}

fed_err fed_coord_step(fed_coord *c, int timeout_ms) {
    if (c->stop_req && c->state == FED_COORD_LINGERING) c->state = FED_COORD_DONE;
    if (c->state == FED_COORD_DONE) return FED_OK;
    if (c->stop_req) return finish(c, "stop requested", false);
    int64_t now = now_ms();
    if (c->cfg.stop_file && now >= c->next_stop_check && c->state != FED_COORD_LINGERING) {
        c->next_stop_check = now + 500;
        if (access(c->cfg.stop_file, F_OK) == 0) return finish(c, "stop file present", true);
    }
    if (c->reopen_req && c->state != FED_COORD_CHECKPOINTING) {
        c->reopen_req = 0;
        fed_err err = open_metrics(c);
        if (err)
            FED_LOG(FED_LOG_ERROR, "metrics: %s", fed_errmsg());
        else
            FED_LOG(FED_LOG_INFO, "metrics file reopened");
    }
    if (timeout_ms < 0 || timeout_ms > 100) timeout_ms = 100;
    fed_net_event ev;
    fed_err err = fed_server_poll(c->srv, timeout_ms, &ev);
    if (err) return fed_errorf(err, "server: %s", fed_server_errmsg(c->srv));
    if ((err = on_event(c, &ev))) return err;
    /* Drain what is already there without waiting. */
    for (int i = 0; i < 64 && ev.type != FED_NET_NONE; i++) {
        if ((err = fed_server_poll(c->srv, 0, &ev)))
            return fed_errorf(err, "server: %s", fed_server_errmsg(c->srv));
        if ((err = on_event(c, &ev))) return err;
    }
    return advance(c);
}

fed_err fed_coord_run(fed_coord *c) {
    while (c->state != FED_COORD_DONE) {
        fed_err err = fed_coord_step(c, 100);
        if (err) return err;
    }
    return FED_OK;
}
