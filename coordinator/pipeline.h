/* The coordinator's update pipeline: what a round's updates go through on their way to
 * the next global model, as a chain of small stage objects (curl's connection filters:
 * each stage is a type table and a next pointer).
 *
 *   uploads -> verify (digest: net/; layout, finite, norm: the aggregator's commit)
 *           -> decode: "mean" (the streaming weighted mean, coordinator/aggregate.h) or
 *              "secagg-mean" (the unmasked sum of the survivors)
 *           -> a robust rule: "median", "trimmed-mean", "krum", "multi-krum", "norm", "rfa"
 *              (stage_robust.c; each update spilled to disk by its per-update hook)
 *           -> "dp" (central Gaussian noise, the adaptive clipping bound, the accountant)
 *           -> "strategy" (the server optimizer's step over the trainable tensors)
 *
 * At a round's close every stage's close() runs in chain order on one fed_round_agg,
 * the aggregate as it stands; a stage with no close() is passed over. A stage that is
 * not configured is not in the chain, so a plain FedAvg round runs "mean" and
 * "strategy" and pays for nothing else.
 *
 * To add a stage: a file stage_<name>.c with its state struct (fed_stage first), its
 * fed_stage_type, a constructor that appends it (fed_stage_append; declare it below for
 * the tests) and fed__coord_stage_<name>(chain, c), which calls the constructor when c's
 * configuration wants the stage; then one line X(<name>) in the list of stages in internal.h
 * (FED_COORD_STAGES) puts it in the chain, at its place. A stage that must see each update (a
 * median) has an update() hook, which the aggregator calls at every commit, and a begin() that
 * forgets the last attempt's updates. Stages are driven by the coordinator's event loop only. */
#ifndef FED_COORDINATOR_PIPELINE_H
#define FED_COORDINATOR_PIPELINE_H

#include "coordinator/aggregate.h"
#include "coordinator/coordinator.h"
#include "core/codec.h"
#include "core/model.h"
#include "proto/msg.h"
#include "privacy/dp.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A round's aggregate as it passes from stage to stage. */
typedef struct fed_round_agg {
    uint64_t round;    /* the round being closed */
    float *mean;       /* (n) the aggregate delta over the trainable tensors, in manifest
                          order: set by the decode stage, changed in place by later ones */
    size_t n;          /* floats of mean */
    size_t accepted;   /* updates in it */
    double weight;     /* their total weight (FedAvg: examples; DP, secagg: 1 each) */
    size_t clipped;    /* updates the aggregator scaled down to the clipping bound */
    size_t sampled;    /* sites sampled in the attempt */
    size_t population; /* connected sites the sample was drawn from */
    double z;          /* DP: the noise multiplier the aggregate carries (dp_noise; the
                          secagg stage scales it to the survivors) */
    double clip;       /* DP: the L2 bound applied this round (0: none) */
    double epsilon;    /* DP: spent once this round counts (NaN without DP) */
} fed_round_agg;

typedef struct fed_stage fed_stage;

/* What a kind of stage does. */
typedef struct fed_stage_type {
    const char *name; /* "mean", "dp", ... (logs, errors) */
    /* At the round's close: reads and changes r. An error is fatal for the coordinator
     * (as any failure of the round's close) and stops the chain. NULL: pass-through. */
    fed_err (*close)(fed_stage *s, fed_round_agg *r);
    /* Frees what the stage owns (not the stage itself). NULL: nothing. */
    void (*destroy)(fed_stage *s);
    /* Per update: each update the aggregator accepts, once it passed every check (its
     * values d, n floats, only for the call; its weight and L2 norm). An error rejects
     * that update (fed_errmsg() says why). NULL: the stage needs no single update. */
    fed_err (*update)(fed_stage *s, const float *d, size_t n, double w, double norm);
    /* At the start of each attempt of a round, before any update. NULL: nothing. */
    void (*begin)(fed_stage *s);
} fed_stage_type;

/* The part of every stage the chain sees; a stage's state struct starts with it. */
struct fed_stage {
    const fed_stage_type *type;
    fed_stage *next;
};

/* Appends s (a stage's fed_stage, heap-allocated with fed_malloc) at the end of *chain,
 * which owns it from then on. */
void fed_stage_append(fed_stage **chain, fed_stage *s);
/* Hands one accepted update to every stage with an update() (a fed_agg_observer, its user
 * the chain); stops at the first error. */
fed_err fed_stage_update_all(void *chain, const float *d, size_t n, double w, double norm);
/* Runs every begin() in chain order. */
void fed_stage_begin_all(fed_stage *chain);
/* True when some stage has an update(): the aggregator must call fed_stage_update_all. */
bool fed_stage_wants_updates(const fed_stage *chain);
/* Runs every close() in chain order on r; stops at the first error. */
fed_err fed_stage_close_round(fed_stage *chain, fed_round_agg *r) FED_MUST_USE;
/* The names of the chain's stages joined by " -> " into buf (len bytes). */
void fed_stage_describe(const fed_stage *chain, char *buf, size_t len);
/* Destroys every stage; NULL-safe, sets *chain to NULL. */
void fed_stage_destroy_all(fed_stage **chain);

/* ---- the stages (one file each) ---- */

/* "mean" (stage_mean.c): the aggregate is the aggregator's weighted mean of the
 * committed updates (fed_agg_result_mut; borrowed agg). */
fed_err fed_stage_mean_new(fed_stage **chain, fed_agg *agg) FED_MUST_USE;

/* "secagg-mean" (stage_secagg.c): the aggregate is the survivors' decoded sum divided
 * by their number; the noise multiplier becomes z sqrt(survivors / participants) (each
 * of n participants added noise of std z S / sqrt(n)). The open protocol is destroyed.
 * sec: the coordinator's secure-aggregation state (borrowed). */
struct coord_sec;
fed_err fed_stage_secagg_new(fed_stage **chain, struct coord_sec *sec) FED_MUST_USE;

/* A robust rule (stage_robust.c), named after it ("median", "trimmed-mean", "krum",
 * "multi-krum", "norm", "rfa"): replaces the mean with the rule's aggregate of the round's
 * updates, which its update() keeps in a spill file (coordinator/spill.h) in spill_dir
 * (NULL: $TMPDIR). Updates weigh 1 each, except for "norm" and "rfa", which weigh them as
 * the mean does (examples, bounded by max-examples-per-site). cfg is copied; n floats per
 * update. "norm" with a fixed bound needs no stage: the aggregator clips (fed_agg_set_clip). */
fed_err fed_stage_robust_new(fed_stage **chain, const fed_coord_robust_config *cfg, size_t n,
                             const char *spill_dir) FED_MUST_USE;

/* "dp" (stage_dp.c): Gaussian noise of std cfg->noise x clip / m on the mean of m updates
 * (unless sites_add_noise: with secagg the sites added it), the next round's adaptive
 * bound (*clip_now, applied to agg), and one accountant step of sampling rate sampled /
 * population and multiplier r->z. cfg is copied; acc, clip_now and agg are borrowed: the
 * coordinator checkpoints them. */
fed_err fed_stage_dp_new(fed_stage **chain, const fed_coord_dp_config *cfg, bool sites_add_noise,
                         fed_dp_accountant *acc, double *clip_now, fed_agg *agg) FED_MUST_USE;

/* The change of the trainable weights from one version to the next as a codec stream,
 * published by the "downlink" stage for RoundStart (len 0: none this version). */
typedef struct fed_coord_down {
    fed_codec codec;             /* cfg.compress_down ("none": off) */
    char name[FED_CODEC_NAME];   /* its canonical name */
    const uint8_t *bytes;        /* the stream (the stage's buffer) */
    size_t len;                  /* its bytes; 0: no stream */
    uint64_t from, to;           /* the versions it leads from and to */
    uint8_t sha[FED_SHA256_LEN]; /* its SHA-256 */
} fed_coord_down;

/* "downlink" (stage_downlink.c), after "strategy": commits the server's step compressed.
 * The change of model's trainable weights since the last close is encoded with codec (a
 * dense one: fp16, bf16, q8, q4), decoded again, and the model's trainable weights become
 * the last ones plus the decoded change, exactly what a site holding the last version
 * rebuilds; the stream goes to *out, from *version (borrowed) to *version + 1. mf names
 * the model's tensors (its tensors array borrowed: the coordinator's manifest). */
fed_err fed_stage_downlink_new(fed_stage **chain, fed_model *model, const fed_msg_manifest *mf,
                               const fed_codec *codec, const uint64_t *version,
                               fed_coord_down *out) FED_MUST_USE;

/* "strategy" (stage_strategy.c): the server optimizer's step, w += step(mean), over the
 * trainable tensors of model in manifest order (model and strategy borrowed). */
fed_err fed_stage_strategy_new(fed_stage **chain, fed_model *model,
                               fed_strategy *strategy) FED_MUST_USE;

#endif
