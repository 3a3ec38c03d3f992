/* The coordinator: the round engine of docs/ROUNDS.md over a fed_server. It holds the
 * global model, a registry of clients keyed by certificate CN, samples clients for each
 * round (seeded), sends RoundStart and the global weights (only to clients that do not
 * hold the current version), receives each client's delta straight into an aggregator
 * slot (coordinator/aggregate.h), applies the server strategy over the trainable tensors,
 * evaluates (central and federated), checkpoints, and logs one status line per round.
 *
 * The engine is an explicit state machine driven by fed_server_poll events in one thread:
 *
 *   WAITING -> SAMPLING -> BROADCASTING -> COLLECTING -> AGGREGATING -> EVALUATING
 *           -> CHECKPOINTING -> (SAMPLING | WAITING | DONE)
 *
 * A coordinator restarted when its newest checkpoint is already the last round (it was
 * killed between that checkpoint and the export, or the export failed) finishes from the
 * checkpoint: it exports, then LINGERS up to linger_ms telling the sites that reconnect
 * that the federation is over (Bye{finished}), and is DONE once min_clients of them were
 * told or the time is up.
 *
 * COLLECTING goes back to SAMPLING (same round, new sample) when the deadline passes with
 * fewer than min_fit accepted updates.
 * fed_coord_step does one poll and the work it enables, so a test can drive the coordinator and
 * scripted clients from one thread; fed_coord_run loops until a stop condition.
 *
 * Checkpoints (when ckpt.dir is set): after every round
 * <dir>/round-NNNNNN.safetensors (the global model, metadata fedtune.round,
 * fedtune.model_version, fedtune.strategy, fedtune.sampling_seed, fedtune.sha256 of the
 * flat parameter bytes) and, for strategies with state, <dir>/round-NNNNNN.strategy
 * .safetensors (its buffers, digest in the model file), both written atomically and the
 * directory fsynced; the last ckpt.keep rounds are kept. fed_coord_new resumes
 * from the newest checkpoint whose digests verify, falling back to older ones (logged).
 *
 * What is not here: option parsing, data loading (the caller hands over the initial
 * model and the evaluation set), signal handlers (the caller's handler calls
 * fed_coord_request_stop / fed_coord_request_reopen, which are async-signal-safe). */
#ifndef FED_COORDINATOR_H
#define FED_COORDINATOR_H

#include "coordinator/aggregate.h"
#include "dataset/dataset.h"
#include "core/err.h"
#include "core/model.h"
#include "core/safetensors.h"
#include "net/channel.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum fed_coord_state {
    FED_COORD_WAITING = 0,   /* fewer than min_clients connected */
    FED_COORD_SAMPLING,      /* choosing this round's clients */
    FED_COORD_BROADCASTING,  /* sending RoundStart (and weights) */
    FED_COORD_COLLECTING,    /* receiving updates until the sample answered, min_fit plus
                                wait_after_min_ms, or the deadline */
    FED_COORD_AGGREGATING,   /* strategy step over the mean delta */
    FED_COORD_EVALUATING,    /* central and federated evaluation */
    FED_COORD_CHECKPOINTING, /* writing the round's files and metrics */
    FED_COORD_LINGERING,     /* the last round was done before this process started: the
                                model was exported, sites that reconnect are told Bye */
    FED_COORD_DONE,          /* a stop condition held; the final model was exported */
} fed_coord_state;

/* "waiting", "sampling", ... */
const char *fed_coord_state_name(fed_coord_state s);

struct fed_coord_round_stats;

/* A failed attempt (fewer than min_fit updates, or a secure aggregation that cannot
 * finish) is retried after backoff_ms, doubling with every failed attempt of the round up
 * to backoff_max_ms; one warn line per attempt gives the reasons the sampled clients gave.
 * When max_failed_attempts attempts in a row fail for the same main reason, the
 * federation stops: the sites are told (Bye{finished}) and fed_coord_step fails with
 * FED_ECANCELED and that reason (0: never stop). */
typedef struct fed_coord_retry_config {
    int64_t backoff_ms;           /* >= 0 (1 000) */
    int64_t backoff_max_ms;       /* >= backoff_ms (60 000) */
    uint32_t max_failed_attempts; /* (10) */
} fed_coord_retry_config;

/* Differential privacy (DP-FedAvg with fixed clipping and central Gaussian noise,
 * privacy/dp.h), on when clip > 0: every update is clipped to L2 norm clip and weighs 1
 * (example counts would leak), noise N(0, (noise * clip / m)^2) is added to each
 * coordinate of the mean of the m accepted updates, and an RDP accountant (sampling rate
 * q = sampled / connected, the IMPROVED conversion) reports epsilon at delta after every
 * round. The guarantee is per client (user-level), against whoever sees the models after
 * the coordinator: the coordinator itself sees the updates.
 * Adaptive clipping (Andrew et al. 2021), on when target_quantile > 0: the bound starts at
 * clip and after each round moves geometrically toward the target_quantile quantile of
 * the update norms, bound *= exp(-clip_lr x (b - quantile)), b the share of updates that
 * were within it, counted with Gaussian noise of std count_noise (0: max(sampled / 20,
 * noise)). The privacy of the count is paid from the same noise multiplier: the update
 * noise rises to (noise^-2 - (2 count_noise)^-2)^-1/2, and epsilon is unchanged. Not with
 * secagg (the count would need its own secure sum). */
typedef struct fed_coord_dp_config {
    double clip;            /* L2 bound of an update (0: no DP) */
    double noise;           /* noise multiplier z >= 0 (0: clipping only, epsilon infinite) */
    double delta;           /* in (0, 1) */
    double target_epsilon;  /* stop before a round would spend more (0: off) */
    double target_quantile; /* in (0, 1); 0: fixed clipping */
    double clip_lr;         /* >= 0 (0.2) */
    double count_noise;     /* >= 0 */
    uint64_t noise_seed;    /* 0: a fresh key from the operating system every round; else
                               noise reproducible from it (simulation) */
} fed_coord_dp_config;

/* Secure aggregation (privacy/secagg.h: SecAgg with the SecAgg+ neighbour graph), on when
 * `on`: the sampled clients get participant ids in CN order and exchange fresh keys
 * through the coordinator, signed with their certificates' keys and checked on both sides
 * (plaintext simulation: unsigned); each then uploads its delta clipped to [-clip, clip]
 * per coordinate, quantized to quant levels and masked. The coordinator holds only the
 * running sum of the masked uploads and decodes the sum once the survivors have helped
 * remove the masks (also those of clients that dropped after sharing their keys). Every
 * update weighs 1: the new model is the mean of the survivors' deltas. Each phase of the
 * key exchange waits at most phase_ms (the training overlaps it); a round whose secure
 * aggregation cannot finish (fewer than threshold survivors) is retried like one short of
 * min_fit. With dp.clip the clients clip their deltas to that L2 norm and each adds
 * Gaussian noise of std dp.noise * dp.clip / sqrt(sampled), so that the sum carries the
 * noise central DP would add (the accountant books the noise of the survivors actually
 * summed). Needs min_fit >= 2; max_update_norm cannot apply. */
typedef struct fed_coord_secagg_config {
    bool on;
    uint32_t degree;    /* neighbours per client (0: min(sampled - 1, 30)) */
    uint32_t threshold; /* shares that rebuild a secret (0: the smallest valid) */
    double clip;        /* per-coordinate clip range (0: 8) */
    uint32_t quant;     /* quantization levels (0: 2^22); sampled x this < 2^32 */
    int64_t phase_ms;   /* longest wait of each key-exchange phase (30 000) */
} fed_coord_secagg_config;

/* Byzantine-robust aggregation: how the round's accepted updates become its aggregate.
 *   MEAN          the weighted mean (FedAvg; weights: examples)
 *   MEDIAN        the coordinate-wise median (Yin et al. 2018)
 *   TRIMMED_MEAN  per coordinate, the mean once the trim share (else f) of the largest
 *                 and of the smallest values are cut off
 *   KRUM          the update with the least sum of squared distances to its m - f - 2
 *                 nearest others (Blanchard et al. 2017); MULTI_KRUM: the mean of the
 *                 m - f best by that score (El Mhamdi et al. 2018)
 *   NORM          the weighted mean of the updates clipped to an L2 bound (Sun et al.
 *                 2019): norm_bound, or 0: the round's median norm
 *   RFA           the weighted geometric median, by smoothed Weiszfeld iterations (Pillutla
 *                 et al. 2022)
 * Median, trimmed mean and (multi-)Krum weigh every update 1: an example count is the
 * site's claim. Every rule but MEAN and NORM with a bound keeps the round's updates in a
 * spill file (coordinator/spill.h), so memory stays O(model). The coordinator's checks
 * (finite, shape, max_update_norm, example bounds) come first either way. None applies
 * with secure aggregation (the coordinator sees only the sum) or central DP (the noise is
 * calibrated to the clipped mean's sensitivity): refused at start-up, as is a min_fit too
 * small for f (Krum: m > 2f + 2; median, trimmed mean, RFA: m > 2f). */
typedef enum fed_robust_rule {
    FED_ROBUST_MEAN,
    FED_ROBUST_MEDIAN,
    FED_ROBUST_TRIMMED_MEAN,
    FED_ROBUST_KRUM,
    FED_ROBUST_MULTI_KRUM,
    FED_ROBUST_NORM,
    FED_ROBUST_RFA,
} fed_robust_rule;

typedef struct fed_coord_robust_config {
    fed_robust_rule rule;  /* MEAN: off */
    size_t byzantine;      /* f: bad updates a round must withstand (0) */
    double trim;           /* TRIMMED_MEAN: share cut at each end, [0, 0.5) (0: f each end) */
    double norm_bound;     /* NORM: the L2 bound (0: the round's median norm) */
    const char *spill_dir; /* the spill file's folder (NULL: the checkpoint folder, else
                              $TMPDIR or /tmp) */
} fed_coord_robust_config;

/* "mean", "median", "trimmed-mean", "krum", "multi-krum", "norm", "rfa"; and back
 * (FED_EINVAL naming the choices for another name). */
const char *fed_robust_name(fed_robust_rule rule);
fed_err fed_robust_parse(const char *name, fed_robust_rule *rule) FED_MUST_USE;
/* The least min_fit cfg's rule withstands cfg->byzantine bad updates with: 2f + 3 for
 * Krum, 2f + 1 for median, trimmed mean and RFA (more for a trim share that cuts fewer
 * than f), 1 for MEAN and NORM. */
size_t fed_robust_min_fit(const fed_coord_robust_config *cfg);

/* Checkpoints: see the top of this file and coordinator/checkpoint.h. */
typedef struct fed_coord_ckpt_config {
    const char *dir; /* created if missing; NULL: no checkpoints */
    size_t keep;     /* rounds of checkpoints kept, >= 1 */
} fed_coord_ckpt_config;

typedef struct fed_coord_config {
    fed_server_config server;       /* listen endpoint, TLS files, limits */
    void *zmq_ctx;                  /* a shared ZeroMQ context (inproc), or NULL: own one */
    const fed_model *model;         /* the initial global model (borrowed; fed_coord_new
                                       copies it, fed_coord_new_taking ignores it) */
    const fed_meta *model_meta;     /* its file's metadata (borrowed, may be NULL): its input
                                       standardisation goes to every site in the manifest,
                                       and its pairs (classes, transform...) into the export */
    const fed_dataset *eval_data;   /* central evaluation set, standardised (borrowed) or NULL */
    size_t eval_batch;              /* batch of central evaluation (0: 256); fewer where a
                                       batch's activations would pass 16 MB */
    size_t eval_threads;            /* threads of central evaluation (0, 1: the engine's
                                       own; more pays where BLAS runs on one thread, as
                                       in the simulator, whose workers idle meanwhile) */
    uint64_t rounds;                /* rounds to run in all (a resumed run counts the done ones) */
    double fraction;                /* fraction of connected clients sampled, (0, 1] */
    size_t min_clients;             /* connected clients needed to start a round, >= 1 */
    size_t min_fit;                 /* accepted updates a round needs, 1..min_clients */
    int64_t deadline_ms;            /* round deadline, pushed back while transfers progress */
    int64_t wait_after_min_ms;      /* once min_fit updates are accepted, how much longer the
                                       round waits for the rest of its sample (0: closes at
                                       once; -1: until the deadline). A round also closes as
                                       soon as every sampled client has answered or left */
    fed_msg_train_config train;     /* sent in RoundStart; optimizer string borrowed */
    const char *freeze;             /* comma-separated globs of frozen tensors, or NULL */
    bool has_tokenizer;             /* the model reads text with the tokenizer of digest: */
    uint8_t tokenizer_sha256[32];   /* (its canonical JSON's SHA-256), which the manifest
                                       carries so that a site tokenizing otherwise refuses */
    bool keep_frozen;               /* the model's own frozen flags stay (LoRA: the base, and
                                       lora_A with FFA-LoRA) and freeze adds to them; false:
                                       every tensor not in freeze trains (false) */
    fed_strategy_config strategy;   /* server optimizer */
    double max_update_norm;         /* L2 bound of one delta (0: off) */
    uint64_t max_examples_per_site; /* bound of the example count an update claims (its
                                       FedAvg weight), 1..2^53; an update must also claim
                                       no more than its site's Hello announced */
    size_t slots;                   /* updates received at once (1..FED_AGG_MAX_SLOTS) */
    bool ordered_uploads;           /* receive updates one at a time in CN order: the fold
                                       order, hence the model's bytes, is the same in every
                                       run (no extra memory: uploads wait at the sites, so
                                       a round takes about the sum of the uploads' times
                                       instead of the longest) */
    fed_coord_retry_config retry;   /* failed attempts: backoff and giving up */
    fed_coord_dp_config dp;         /* differential privacy (off: dp.clip 0) */
    fed_coord_secagg_config secagg; /* secure aggregation (off: secagg.on false) */
    fed_coord_robust_config robust; /* robust aggregation (off: FED_ROBUST_MEAN) */
    const char *compress_down;      /* downlink codec (fp16, bf16, q8, q4; NULL or "none": off):
                                       each version is the last plus its change encoded with
                                       it, and a site with the capability "delta-down" that
                                       holds the last version receives the change instead of
                                       the weights (pipeline.h, "downlink") */
    const char *compress;           /* uplink codec asked of the sites (core/codec.h: "q8",
                                       "topk:0.01+q8"...; NULL or "none": off). Sites with the
                                       capability "codec" send it, others plain f32 deltas;
                                       both are accepted. Refused with secagg */
    fed_coord_ckpt_config ckpt;     /* checkpoints (off: ckpt.dir NULL) */
    const char *metrics_file;       /* JSON lines appended per round, or NULL */
    uint64_t seed;                  /* sampling seed */
    double target_accuracy;         /* stop when central accuracy reaches it (0: off) */
    const char *stop_file;          /* stop when this file exists, or NULL */
    const char *out;                /* final model export, or NULL */
    int64_t linger_ms;              /* LINGERING at most this long (60 000; 0: no lingering) */
    int64_t bye_wait_ms;            /* after its Byes, at most this long for the sites told to
                                       close their sessions, so that no Bye is cut off by the
                                       socket closing (3000; 100 in sim, whose sites close only
                                       once the coordinator has ended) */
    /* The federation's input standardisation, when the model brings none (model_meta has
     * no fedtune.standardize): before round 1 a statistics round (round 0, no weights, no
     * training) asks every connected client for the exact moments of its raw training
     * split (dataset/moments.h; through the secure sum with secagg); their sum gives one
     * standardizer (per feature, or per channel for an image input) that every site then
     * applies instead of one fitted on its own data, that the central evaluation applies
     * to eval_data, and that checkpoints and the export carry. The statistics are
     * released without differential-privacy noise: refused with dp.clip. */
    bool input_stats; /* (true) */
    /* Driven rounds (fed_coord_drive_round; `fedtune relay`): no round starts but one a
     * caller asks for, and a round's close applies nothing to the model: its aggregate
     * (the mean of the updates before any server step) waits for the caller. Needs
     * FedAvg (the server step is the caller's), the mean rule, no DP, no secure
     * aggregation, no input statistics, no downlink codec and no checkpoints. */
    bool driven; /* (false) */
    /* Called on the coordinator's thread after each round's checkpoint and status line
     * (the simulator prints and plots from it); NULL: none. */
    void (*on_round)(void *user, const struct fed_coord_round_stats *s);
    void *on_round_user;
    /* A count the caller defines over the round's accepted updates: the metrics line gets
     * "<tally_key>":N, N the accepted sites for which tally(tally_user, cn) is true (the
     * simulator's "malicious_accepted": it knows who attacks, the coordinator does not).
     * Called on the coordinator's thread; NULL: no such field. */
    bool (*tally)(void *user, const char *cn);
    void *tally_user;
    const char *tally_key; /* a JSON key, no quotes or backslashes (borrowed) */
    /* A number the caller computes from each round's new global model (the simulator's
     * "backdoor_success": its own evaluation set): the round's stats get it as `metric`
     * and the metrics line as "<metric_key>":V. Called on the coordinator's thread after
     * the central evaluation, with the model to evaluate (its weights must stay as they
     * are); NaN (a failure) is written null. NULL: none. */
    double (*metric)(void *user, fed_model *m);
    void *metric_user;
    const char *metric_key; /* a JSON key, no quotes or backslashes (borrowed) */
} fed_coord_config;

/* Defaults: 10 rounds, fraction 1, min_clients 2, min_fit 2, deadline 600 s, wait 10 s
 * after min_fit, no DP (dp_delta 1e-5), no secure aggregation (phases of 30 s), FedAvg,
 * 1 slot, keep 3 checkpoints, TrainConfig 1 epoch, batch 32, adam, lr 1e-3, seed 1, at
 * most 1e9 examples per site, retries after 1 s doubling to 60 s, stop after 10 failed
 * attempts in a row for one reason. */
fed_coord_config fed_coord_default_config(void);

/* What the last closed round measured. */
typedef struct fed_coord_round_stats {
    uint64_t round;                     /* 1-based */
    uint64_t model_version;             /* after the round */
    uint64_t attempts;                  /* samples drawn (1 + retries) */
    uint64_t sample_seed;               /* seed of the sample that closed the round */
    size_t sampled, returned, rejected; /* clients */
    size_t failed;                      /* sampled clients whose round failed at the site */
    double examples;                    /* total weight of accepted updates */
    double central_loss, central_acc;   /* NaN without eval_data */
    double metric;                      /* config.metric of the new model; NaN without */
    double fed_loss, fed_acc;           /* example-weighted global_* metrics; NaN if none */
    double fed_weight;                  /* the weight behind them: the sites' eval examples
                                           (a site that sent none: its update's examples) */
    double train_loss;                  /* example-weighted train_loss of the updates; NaN */
    double epsilon;                     /* DP spent so far at dp_delta; NaN without DP */
    double clip;                        /* DP: the L2 bound applied this round */
    size_t clipped;                     /* DP: updates scaled down to dp.clip (secagg: the
                                           sites clip, the coordinator cannot count) */
    size_t secagg_dropped;              /* secagg: participants whose masks were removed
                                           without their update (dropped after sharing) */
    uint64_t bytes_in, bytes_out;       /* fed_server_stats during the round */
    size_t models_full;                 /* model transfers of every tensor started */
    size_t models_trainable;            /* ... of the trainable tensors only (the site
                                           held the frozen base) */
    size_t models_delta;                /* ... of the change from the version the site
                                           held, compressed (--compress-down) */
    uint64_t model_bytes;               /* their payload bytes */
    uint64_t update_bytes;              /* payload bytes of the updates accepted (uplink) */
    size_t updates_compressed;          /* ... of them in the compress codec */
    double seconds;                     /* round wall time */
} fed_coord_round_stats;

typedef struct fed_coord fed_coord;

/* Checks cfg, copies the model and applies the freeze globs, resumes from the newest
 * valid checkpoint of ckpt.dir, opens the metrics file and binds the server.
 * FED_EINVAL naming the field, FED_EIO for files, server errors as fed_server_new. */
fed_err fed_coord_new(fed_coord **out, const fed_coord_config *cfg) FED_MUST_USE;
/* fed_coord_new taking the initial model over instead of copying cfg->model (ignored):
 * one copy fewer of a big model at start-up. *model is the coordinator's, and set to
 * NULL, whatever this returns (FED_EINVAL for a NULL *model). */
fed_err fed_coord_new_taking(fed_coord **out, const fed_coord_config *cfg,
                             fed_model **model) FED_MUST_USE;
/* Says Bye to connected clients and closes everything. NULL-safe; sets *c to NULL. */
void fed_coord_destroy(fed_coord **c);

/* The endpoint really bound ("tcp://127.0.0.1:41234"). */
const char *fed_coord_endpoint(const fed_coord *c);

/* Polls the server once (waiting up to timeout_ms for an event) and advances the state
 * machine as far as it can. Errors are fatal for the coordinator (server socket failed,
 * checkpoint could not be written). */
fed_err fed_coord_step(fed_coord *c, int timeout_ms) FED_MUST_USE;
/* Steps until DONE (rounds, target accuracy, stop file or fed_coord_request_stop). */
fed_err fed_coord_run(fed_coord *c) FED_MUST_USE;

/* Async-signal-safe requests, acted upon by the next step: stop cleanly (abandon the
 * open round, export, say Bye{finished = false}: the sites keep reconnecting and rejoin
 * a restarted coordinator, which resumes from its checkpoints), and reopen the metrics
 * file (log rotation). Rounds done, the target accuracy and the stop file end the
 * federation itself: Bye{finished = true}, the sites exit. */
void fed_coord_request_stop(fed_coord *c);
void fed_coord_request_reopen(fed_coord *c);

fed_coord_state fed_coord_get_state(const fed_coord *c);
/* The channel's counters (bytes in and out since start...). */
void fed_coord_server_stats(const fed_coord *c, fed_net_stats *st);
/* Rounds closed so far (including those restored from a checkpoint). */
uint64_t fed_coord_rounds_done(const fed_coord *c);
uint64_t fed_coord_model_version(const fed_coord *c);
/* The global model (valid until the next step). */
const fed_model *fed_coord_model(const fed_coord *c);
/* SHA-256 of the global model's flat parameter bytes (what RoundStart announces). */
void fed_coord_model_sha256(const fed_coord *c, uint8_t out[FED_SHA256_LEN]);
/* Stats of the last closed round (round 0 when none). */
fed_coord_round_stats fed_coord_last_round(const fed_coord *c);
/* Updates rejected since creation. */
uint64_t fed_coord_rejected_total(const fed_coord *c);

/* ---- driven rounds (cfg.driven; coordinator/drive.c) ---------------------------------- */

/* What a caller asks of one driven round. */
typedef struct fed_coord_drive {
    uint64_t round;                    /* its number, >= 1: the sites see it (their training
                                          seed is seed + round) */
    const float *params;               /* the global weights, every tensor in the model's
                                          order (copied): a new model version */
    const fed_msg_train_config *train; /* the sites' training (copied, optimizer too) */
    const char *input_transform;       /* the model's input transform (JSON), or NULL */
    int64_t deadline_ms;               /* from now: the round's deadline (>= 1); the round
                                          fails when it passes, also while it waits for
                                          min_clients */
} fed_coord_drive;

typedef enum fed_coord_drive_state {
    FED_DRIVE_IDLE = 0, /* none asked yet */
    FED_DRIVE_RUNNING,  /* asked; fed_coord_step runs it */
    FED_DRIVE_DONE,     /* closed: fed_coord_drive_result has its aggregate */
    FED_DRIVE_FAILED,   /* it cannot close (deadline, too few updates): why says why */
} fed_coord_drive_state;

/* Starts a driven round. FED_EINVAL when c is not driven, a round is running, or d is
 * invalid (the training spec as fed_train_spec_check, naming the field). */
fed_err fed_coord_drive_round(fed_coord *c, const fed_coord_drive *d) FED_MUST_USE;
/* Where the last driven round is; DONE: *mean its aggregate (n floats over the trainable
 * tensors in manifest order, valid until the next drive), *weight the total weight of its
 * updates (their examples); FAILED: *why the reason (valid as long). Any out may be NULL. */
fed_coord_drive_state fed_coord_drive_result(const fed_coord *c, const float **mean, size_t *n,
                                             double *weight, const char **why);
/* Ends a running driven round now (FAILED with why): its updates are dropped. */
void fed_coord_drive_cancel(fed_coord *c, const char *why);
/* Ends the federation for c's sites: they are told it is over (Bye{finished}: they exit)
 * and c is DONE. Errors as a stop's (the export). */
fed_err fed_coord_finish(fed_coord *c, const char *why) FED_MUST_USE;

/* Monitoring (coordinator/status.c, docs/MONITORING.md). The engine keeps a status record
 * that these copy under a mutex: callable from any thread while c exists, never blocking
 * the engine for longer than the copy. Each sets *out to a malloc'd NUL-terminated text
 * (the caller frees it with free) or NULL and returns FED_ENOMEM.
 *   fed_coord_status_json   {"state", "paused", "rounds_done", "model_version", "sites":
 *                           [{"name", "state", "last_seen", "rounds", "rejections"}],
 *                           "history", "warnings", ...}
 *   fed_coord_metrics_text  the Prometheus text exposition format (version 0.0.4)
 *   fed_coord_status_page   the self-contained HTML status page */
fed_err fed_coord_status_json(fed_coord *c, char **out) FED_MUST_USE;
fed_err fed_coord_metrics_text(fed_coord *c, char **out) FED_MUST_USE;
fed_err fed_coord_status_page(fed_coord *c, char **out) FED_MUST_USE;
/* Notes a warning or error line (level "warn" or "error") for the page and /status (the
 * last 20 are kept); any thread. The CLI's log handler calls it. */
void fed_coord_note_warning(fed_coord *c, const char *level, const char *line);

#endif
