/* A site of the federation (`fedtune client`): it holds the site's private labeled data,
 * joins the coordinator over the secure channel (net/channel.h), and answers rounds as
 * docs/ROUNDS.md fixes them: receive (or reuse) the global model, evaluate it on the
 * local test split, fine-tune it with core's fed_fit on the local training split, and
 * send back the delta of the trainable tensors with the example count and aggregate
 * metrics. What deliberately does not live here: option parsing and signal handling
 * (cli/cmd_client.c), aggregation and round scheduling (coordinator/).
 *
 * Privacy: training data and per-example information never leave the process. The
 * coordinator only ever sees Hello's example counts, the Update's aggregate metrics
 * and the weight delta; Error replies about local failures carry the error class and
 * the data's shape (features, classes), never a cell, a line number or a label. Log
 * lines carry aggregates only.
 *
 * The data are loaded, split and prepared once, by fed_site_new:
 *   - a seeded stratified split (fed_data_split, `seed`) holds out `test_split` of the
 *     examples for federated evaluation of the global model; the rest is trained on;
 *   - with `standardize` (the default) a standardizer x' = (x - mean) / std is fitted
 *     on the local training split and applied to both parts. The coordinator's model
 *     carries no input transform in the manifest, so each site scales its own data;
 *     this suits models pre-trained on standardised inputs. Turn it off when the data
 *     are already on the scale the model expects (e.g. pixels in [0, 1]).
 *   - string class labels map to ids in sorted order unless data_opts.classes lists
 *     them: every site must agree on the ids, so a site that may lack a class (or uses
 *     names) should list all classes, or use integer labels.
 *
 * A round (RoundStart from the coordinator):
 *   1. The model is built from manifest.arch (first time, or when the architecture
 *      changes) and every manifest tensor is checked against it: same count, order,
 *      names, shapes, dtype F32, total_bytes = 4 x parameters. A mismatch is answered
 *      with Error{ERR_SHAPE} (ERR_FORMAT for an unreadable architecture).
 *   2. transfer_id != 0: the weights arrive as that transfer into a receive buffer (kept
 *      across rounds, reallocated only when the model grows), checked against
 *      manifest.sha256 by the channel, then become the held global model (version,
 *      SHA-256, flat buffer). transfer_id == 0: the held model is used if its SHA-256
 *      equals manifest.sha256, else the answer is Error{ERR_NO_MODEL, "no model version N"}.
 *   3. The trainable flags come from the manifest; the global model is evaluated on the
 *      local test split (fed_evaluate), then trained with fed_fit using
 *      fed_train_spec_fit (core/train_spec.h: seed config.seed + round, no validation, no
 *      early stopping),
 *      local caps on epochs and batch applied and logged.
 *   4. Update{round, model_version, examples = training split size, metrics train_loss,
 *      train_accuracy, global_loss, global_accuracy, eval_examples, DELTA_F32,
 *      transfer_id = round, total_bytes, sha256}, then the delta (local - global over the
 *      trainable tensors in manifest order, little-endian F32) as transfer `round`. The
 *      round is done when the coordinator confirms the transfer: one info log line with
 *      round, examples, train loss/accuracy, global loss/accuracy, seconds.
 * Securely aggregated rounds (RoundStart.secagg, docs/ROUNDS.md): the site also runs
 * its side of privacy/secagg.h: fresh keys signed with its certificate key (TLS mode;
 * plaintext simulation: unsigned) advertised at once, the neighbours' keys checked
 * against the CA and shares sent as soon as they arrive (also while training), then,
 * once trained and the shares delivered, the delta clipped (and noised, with DP),
 * masked and sent as the MASKED message instead of the plain delta; the round ends
 * when the site answered the coordinator's unmasking request. Hello also says
 * "secagg".
 * A round that fails locally (data that do not fit the model, a diverging loss) is
 * answered with Error and the site waits for the next one. A new RoundStart abandons
 * the round in progress. An Error from the coordinator while the delta is being sent
 * (the Update was rejected) abandons the round.
 *
 * Connection: Hello says software "fedtune <version>", capabilities "delta-f32",
 * "eval" and "secagg", and the training and test example counts. When the session ends
 * (FED_NET_LEFT) the round in progress is dropped (the coordinator cancels its side: ROUNDS.md
 * "Leaving") and the site connects afresh after a delay that starts at
 * backoff_initial_ms, doubles with every failed attempt up to backoff_max_ms, and is
 * shortened by a random share of up to backoff_jitter; a welcome resets it. A lost
 * connection (a coordinator killed or restarting) ends the session at once (the channel
 * watches it), so the delay starts then, not at the next keepalive. A refusal that
 * retrying cannot change (FED_NET_LEFT with permanent: the coordinator's TLS alert says
 * this site's certificate is revoked, unknown, expired or unsuitable, or the coordinator's
 * certificate fails this site's checks) ends fed_site_run with that error instead. A new
 * fed_client is made for every connection, so no transfer state of an old session
 * survives (the coordinator sends the model again after any reconnect).
 *
 * Threads: fed_site_run is single-threaded and owns the site. While fed_fit trains,
 * the channel is still polled between steps (about every 100 ms) so heartbeats flow;
 * events that arrive meanwhile are queued, and a stop request, a lost session, a new
 * RoundStart or a Bye makes training end after the current epoch.
 *
 * External training (the simulator, sim/): with config.external_training the site's
 * thread only moves messages (fed_site_step) and a round whose weights have arrived
 * waits as a job: fed_site_job_ready says so, fed_site_job_claim hands it over, and
 * any thread runs fed_site_job_run with its own fed_site_trainer (a model built from
 * the manifest's architecture, reused across sites and rounds). Exactly the same
 * round code runs (evaluate, fed_fit, delta, checks). While the job runs, the site's
 * thread keeps calling fed_site_step, which then only pumps the channel and queues
 * events (a lost session or a new RoundStart interrupts the job after its epoch);
 * once fed_site_job_done, the site's thread calls fed_site_job_finish to send the
 * Update (or the Error) when it chooses, which lets a simulator fix the order in
 * which updates reach the coordinator. With keep_model false the site frees the model
 * buffers after every round, so an idle site holds its data and a connection only. */
#ifndef FED_CLIENT_CLIENT_H
#define FED_CLIENT_CLIENT_H

#include "dataset/dataset.h"
#include "core/err.h"
#include "training/fit.h"
#include "net/channel.h"
#include "proto/msg.h"

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Capabilities a site announces in Hello. */
#define FED_SITE_CAP_DELTA      "delta-f32"
#define FED_SITE_CAP_EVAL       "eval"
#define FED_SITE_CAP_SECAGG     "secagg"
#define FED_SITE_CAP_BASE       FED_CAP_BASE_CACHE /* "base-cache": see fed_base_cache */
#define FED_SITE_CAP_CODEC      FED_CAP_CODEC      /* "codec": RoundStart.compress (core/codec.h) */
#define FED_SITE_CAP_DELTA_DOWN FED_CAP_DELTA_DOWN /* "delta-down": keep_model sites */

/* A store of frozen bases: the tensors of a model that no round changes (a pre-trained
 * network under LoRA adapters or a new head), kept by their SHA-256 (the manifest's
 * base_sha256). A site announces the bases it holds in its Hello; a coordinator then sends
 * it only the trainable tensors, round after round, and the site adds the base. With a
 * folder, bases are also files there (<sha256 hex>.base, raw little-endian float32,
 * written atomically and checked against their name when read), so a restarted site
 * downloads its base no more; without, they live in memory for the process's life. One
 * store may serve many sites (a simulation): it is thread-safe. */
typedef struct fed_base_cache fed_base_cache;
/* dir NULL or "": memory only; otherwise the folder, made if missing (one level).
 * FED_EIO "<dir>: <why>". */
fed_err fed_base_cache_new(fed_base_cache **out, const char *dir) FED_MUST_USE;
/* NULL-safe; sets *c to NULL. No site may use it any more. */
void fed_base_cache_destroy(fed_base_cache **c);

/* A model-poisoning attack a simulated site plays on its updates (fedtune sim only: the
 * `client` command has no way to set it). */
typedef enum fed_attack_kind {
    FED_ATTACK_NONE = 0,   /* an honest site */
    FED_ATTACK_SIGN_FLIP,  /* the update sent is -delta */
    FED_ATTACK_SCALE,      /* model replacement: param * delta */
    FED_ATTACK_NOISE,      /* delta + N(0, param^2) on every coordinate */
    FED_ATTACK_LABEL_FLIP, /* data poisoning, done to the data by the simulator: no stage */
    FED_ATTACK_BACKDOOR,   /* data poisoning (sim/attack.h): triggered copies relabelled
                              param; no stage */
    FED_ATTACK_LIE,        /* "a little is enough" (Baruch et al. 2019): mu - param sigma,
                              coordinate-wise over FED_SITE_LIE_K honest deltas the site
                              trains on bootstrap resamples of its own data */
} fed_attack_kind;

typedef struct fed_site_attack {
    fed_attack_kind kind; /* FED_ATTACK_NONE: honest */
    double param;         /* scale: the factor K (!= 0); noise: the std S (> 0); backdoor:
                             the target label; lie: Z (>= 0) */
    uint64_t seed;        /* noise: its key, with the round as the stream; lie: its
                             resamples' (with the round) */
} fed_site_attack;

/* LIE's estimate of the honest updates: trainings on this many resamples. */
#define FED_SITE_LIE_K 5

/* LIE's Z from the paper for n sites a round of which f are malicious: s = floor(n/2 + 1)
 * - f (the honest sites the attack needs "on its side"), Z = Phi^-1((n - s) / n), Phi the
 * standard normal CDF. NaN when (n - s) / n is not in (0, 1) (e.g. f >= floor(n/2 + 1)).
 * n = 10, f = 2: s = 4, Z = Phi^-1(0.6) = 0.2533471. */
double fed_site_lie_z(size_t n, size_t f);

/* Delegated training (`fedtune relay`, cli/cmd_relay.c): a site with no data of its own whose
 * round's update comes from a callback instead of fed_fit on local data. The callback
 * gets the round (its RoundStart: training spec, manifest with input transform and
 * tokenizer) and the global model (weights and the manifest's trainable flags, built
 * from its architecture), and fills the update: the delta over the trainable tensors in
 * manifest order (what the pipeline's "delta" stage would make; the later stages, such as
 * "compress", still run) and the example count that weighs it. It runs on the site's
 * thread, which meanwhile pumps nothing: it must return before stop_at. An error fails
 * the round, and its detail (fed_errdetail) goes to the coordinator as the Error's text:
 * it must hold nothing private. */
typedef struct fed_site fed_site;

typedef struct fed_site_round_in {
    fed_site *site;                /* the site (for fed_site_delegate_pump) */
    const fed_msg_round_start *rs; /* the round (borrowed for the call) */
    const fed_model *global;       /* the global model, trainable flags set (borrowed) */
    double stop_at;                /* fed_now_s() time by which the update must be made
                                      (the deadline less the upload's margin); 0: none */
} fed_site_round_in;

typedef struct fed_site_round_out {
    float *delta;           /* (n) to fill: the update, host order */
    size_t n;               /* fed_model_num_trainable(global) */
    uint64_t examples;      /* to set: its weight, 1..announce_examples */
    double train_loss;      /* to set: the Update's metrics (NaN: none) */
    double global_loss;     /* ... */
    double global_acc;      /* ... */
    uint64_t eval_examples; /* ... the examples global_loss/acc were measured on */
} fed_site_round_out;

typedef fed_err (*fed_site_train_fn)(void *user, const fed_site_round_in *in,
                                     fed_site_round_out *out);

/* For a train_fn, at least every 100 ms while it works: does the connection's I/O
 * (heartbeats) and queues what arrives; true when the round has become pointless (a new
 * RoundStart, the session lost, a stop request): the callback should then return at once
 * (the round is dropped whatever it returns). */
bool fed_site_delegate_pump(fed_site *s);

/* What a site is made from. fed_site_default_config() fills every field; strings are
 * copied by fed_site_new (the caller may free them afterwards). */
typedef struct fed_site_config {
    const char *coordinator;    /* the coordinator's endpoint: "tcp://fed.example.org:7443" */
    const char *server_name;    /* name (or IP) the coordinator's certificate must carry */
    fed_net_config net;         /* TLS files (net.tls: ca, cert, key, crl), timeouts, chunks */
    void *zmq_ctx;              /* ZeroMQ context to share (borrowed), NULL: the site makes one */
    const char *data;           /* labeled data file: CSV, sklearn CSV or IDX, maybe gzipped */
    fed_csv_options data_opts;  /* how to read it (format, header, label column, missing) */
    const fed_dataset *dataset; /* instead of data: examples in memory (copied at new) */
    const fed_dataset *testset; /* with dataset: the federated-evaluation examples (copied
                                   at new; test_split is then unused), or NULL */
    double test_split;          /* share held out for federated evaluation, [0, 0.9] (0.2) */
    uint64_t seed;              /* seed of the train/test split (1) */
    bool standardize;           /* fit a standardizer on the local training split (true) */
    size_t threads;             /* OpenBLAS threads set by fed_site_run; 0: leave (1) */
    size_t max_epochs;          /* local cap on TrainConfig.epochs; 0: none (0) */
    size_t max_batch;           /* local cap on TrainConfig.batch; 0: none (0) */
    const char *save_updates;   /* folder for an audit copy of every update sent (NULL: none):
                                   round-NNNNNN.safetensors with the delta of each trainable
                                   tensor and the round, model version and examples */
    int backoff_initial_ms;     /* first reconnect delay, >= 1 (1 000) */
    int backoff_max_ms;         /* largest reconnect delay, >= backoff_initial_ms (60 000) */
    double backoff_jitter;      /* share of a delay randomly cut off, [0, 1] (0.5) */
    const char *software;       /* Hello.software; NULL: "fedtune <version>" */
    bool external_training;     /* rounds are trained by fed_site_job_run (false) */
    bool keep_model;            /* keep the global model between rounds (true) */
    const char *identity;       /* with net.plaintext (inproc:// only): the name claimed */
    fed_base_cache *base_cache; /* the store of frozen bases to use (borrowed, outlives the
                                   site; shared by a simulation's sites), or NULL: the site
                                   makes its own, in base_dir */
    const char *base_dir;       /* folder of that own store (NULL: memory only) */
    const uint8_t *tokenizer_sha256; /* the data are text tokenized by the tokenizer of this
                                        digest (32 bytes, copied; NULL: none): a round whose
                                        manifest names another fails, naming both */
    fed_site_attack attack;          /* simulator only: the attack this site plays on its
                                        updates (the "attack" stage; zero: honest) */
    const char *state_dir;           /* folder of the site's state across restarts (NULL:
                                        memory only): the error-feedback residual of the
                                        uplink codec (residual.bin, written atomically) */
    bool no_codec;                   /* do not announce FED_SITE_CAP_CODEC: send plain f32
                                        deltas whatever RoundStart.compress asks (an old
                                        site; tests and the simulator's mixed rounds) */
    fed_site_train_fn train_fn;      /* delegated training (see fed_site_train_fn): no data
                                        (data and dataset NULL), no statistics round and no
                                        secure aggregation (refused per round); NULL: off */
    void *train_user;                /* its first argument */
    uint64_t announce_examples;      /* with train_fn: the training examples Hello announces,
                                        the most an update may claim (>= 1) */
} fed_site_config;

fed_site_config fed_site_default_config(void);

/* What a site did so far; for tests, status lines and the simulator. */
typedef struct fed_site_stats {
    size_t train_examples;     /* local training split */
    size_t eval_examples;      /* local test split */
    size_t features;           /* per example */
    size_t classes;            /* in the local data */
    uint64_t connects;         /* sessions the coordinator welcomed */
    uint64_t rounds_done;      /* Updates whose delta the coordinator confirmed */
    uint64_t rounds_failed;    /* RoundStarts answered with Error */
    uint64_t models_asked;     /* ... of them a request for the model (not held): the round
                                  goes on with the coordinator's second RoundStart */
    uint64_t rounds_dropped;   /* rounds abandoned: session lost, new round, Update rejected */
    uint64_t last_round;       /* round of the last RoundStart (0: none yet) */
    uint64_t last_attempt;     /* its attempt (1-based; a retried round's is higher) */
    uint64_t model_version;    /* version of the global model held (0: none) */
    uint64_t models_full;      /* model transfers received with every tensor */
    uint64_t models_trainable; /* ... with the trainable tensors only (the base was held) */
    uint64_t models_delta;     /* ... as the compressed change from the version held */
    uint64_t model_bytes;      /* payload bytes of those transfers */
    uint64_t update_bytes;     /* payload bytes of the updates sent (as encoded) */
    size_t last_examples;      /* examples the last done round trained on (its weight) */
    double last_train_loss;    /* the last done round's final training loss */
    double last_train_acc;     /* ... its training accuracy, [0, 1] */
    double last_global_loss;   /* ... the global model's loss on the local test split */
    double last_global_acc;    /* ... and its accuracy, [0, 1] (0 without a test split) */
    bool bye;                  /* the last fed_site_run ended on the coordinator's Bye */
} fed_site_stats;

/* Checks cfg, loads and splits the data, fits the standardizer. No connection is made
 * yet. FED_EINVAL for a bad config (field named), a malformed coordinator endpoint or TLS
 * files that fail fed_net_check_tls (checked before the data are read), or data with no
 * training example; the loader's FED_EIO / FED_EFORMAT / FED_ERANGE (naming
 * file:line:column) for the data. */
fed_err fed_site_new(fed_site **out, const fed_site_config *cfg) FED_MUST_USE;
/* NULL-safe; sets *s to NULL. Closes the connection if fed_site_run left one. */
void fed_site_destroy(fed_site **s);

/* Connects and answers rounds until *stop becomes non-zero (stop may be NULL: never) or
 * the coordinator says Bye{finished} (a Bye without finished, a coordinator restarting,
 * is a lost connection: reconnect with backoff). On stop the site says
 * Bye{"site stopping"} if connected.
 * Returns FED_OK in both cases (stats.bye tells which). Errors are for the site as a
 * whole: a refusal retrying cannot change (FED_EAUTH, FED_ETLS: "the coordinator refused
 * this site's certificate: revoked (TLS alert 44); not retrying"), bad TLS files or
 * endpoint (FED_EINVAL), FED_ENOMEM; lost connections and failed rounds are not errors.
 * May be called again. */
fed_err fed_site_run(fed_site *s, volatile sig_atomic_t *stop) FED_MUST_USE;
/* For a caller that drives fed_site_step itself (the embedding API, api/): the flag that
 * makes training inside fed_site_step end after its current epoch, as fed_site_run's stop
 * does (NULL: none). fed_site_run sets its own and clears it when it returns. */
void fed_site_set_stop(fed_site *s, volatile sig_atomic_t *stop);

/* One step of the connection loop fed_site_run repeats: connects when it is time
 * (backoff), waits up to timeout_ms for one event and handles it; while a job runs it
 * only pumps the channel. *done becomes true on the coordinator's Bye{finished}.
 * Errors as fed_site_run. */
fed_err fed_site_step(fed_site *s, int timeout_ms, bool *done) FED_MUST_USE;
/* For a thread that steps many sites (the simulator): the descriptors that become
 * readable when something may have arrived for s (fed_client_wake_fds; 0 between
 * connections), with *conn a number that changes with every new connection, so the
 * caller knows to watch the new ones; and whether fed_site_step could do something now
 * (a connection to make, queued events, a finished job, output to send, input waiting).
 * When fed_site_busy is false nothing happens until a descriptor is readable, a job
 * ends, or a timer of the channel's configuration is due. Site thread only. */
int fed_site_wake_fds(fed_site *s, int fds[2], uint64_t *conn);
bool fed_site_busy(fed_site *s);
/* Bye{"site stopping"} if connected. */
void fed_site_say_bye(fed_site *s);
/* Closes the connection now, dropping the round in progress (a simulated dropout); the
 * next fed_site_step connects again after the backoff. FED_EAGAIN while a job runs. */
fed_err fed_site_disconnect(fed_site *s) FED_MUST_USE;

/* ---- external training (config.external_training) ------------------------------------ */

/* A model that trains rounds of any site: built from the manifest's architecture when it
 * changes, reused otherwise. One per worker thread. */
typedef struct fed_site_trainer fed_site_trainer;
fed_err fed_site_trainer_new(fed_site_trainer **out) FED_MUST_USE;
void fed_site_trainer_destroy(fed_site_trainer **t);

/* Site thread: a round waits for training / its round number. */
bool fed_site_job_ready(const fed_site *s);
uint64_t fed_site_job_round(const fed_site *s);
/* Site thread: hands the job over; until fed_site_job_done the worker owns the round. */
void fed_site_job_claim(fed_site *s);
/* Any thread, once claimed: evaluates, trains and computes the delta with t's model. */
void fed_site_job_run(fed_site *s, fed_site_trainer *t);
/* Site thread: the worker finished. */
bool fed_site_job_done(const fed_site *s);
/* Site thread, once done and before fed_site_job_finish: the update the job computed
 * (delta = local - global over the trainable tensors in manifest order, *n floats, host
 * order; *examples its weight); false when the round failed or was aborted. */
bool fed_site_job_update(const fed_site *s, const float **delta, size_t *n, uint64_t *examples);
/* Site thread, once done: sends the Update and the delta (or the Error of a failed
 * round, or drops an interrupted one). */
void fed_site_job_finish(fed_site *s);
/* Whether a session with the coordinator is established now. */
bool fed_site_connected(const fed_site *s);
/* Site thread: make a running job end after its current epoch (it is then dropped). */
void fed_site_job_abort(fed_site *s, const char *why);

void fed_site_stats_get(const fed_site *s, fed_site_stats *st);
/* Rounds that failed at the site: rounds_failed less the requests for the model (which
 * count there, answered with Error{NO_MODEL}, but are no failure). */
uint64_t fed_site_stats_failed(const fed_site_stats *st);
/* The last error of a call on s, naming the field, file or peer at fault. */
const char *fed_site_errmsg(const fed_site *s);

#endif
