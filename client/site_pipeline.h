/* Internal to client/: the site's update pipeline, what a round's update goes through
 * between training and the wire, as a chain of small stage objects (curl's connection
 * filters; the coordinator's side is coordinator/pipeline.h):
 *
 *   "delta" (local - global over the trainable tensors, in manifest order; not in the
 *            statistics round, whose update is the moments of the data)
 *   -> "attack" (simulator only: a malicious site's sign flip, scaling, noise or LIE)
 *   -> "clip" (the L2 bound of the sites' differential privacy, RoundStart.secagg.dp_clip)
 *   -> "noise" (Gaussian noise of std RoundStart.secagg.dp_noise_std under a fresh key)
 *   -> "compress" (the uplink codec of RoundStart.compress, with error feedback; sites
 *                 with the capability "codec", never with secure aggregation)
 *   -> "mask" (secure aggregation: quantized and masked into the MASKED message)
 *
 * site_pipe_build makes a round's chain from its RoundStart when it arrives; a stage the
 * round does not configure is not in it, so a plain round runs "delta" and pays for
 * nothing else. A stage runs at one of two moments (its type's `when`): right after
 * training, on the thread that trains (the worker while a job runs), as "delta", which
 * needs the trained model; or when the update is sent, on the I/O thread, as "mask",
 * which needs the neighbours' shares that may arrive after training. "clip" and "noise"
 * run when sent, after the audit copy (--save-updates) of the delta is written.
 *
 * To add a stage: a file stage_<name>.c with its state struct (site_stage first), its
 * site_stage_type and a constructor that appends it (site_stage_append), declared below;
 * then one line in site_pipe_build (site_pipeline.c) says when it is in the chain and
 * where. The chain, like the RoundStart it comes from, belongs to the round
 * (site_internal.h's site_round): the I/O thread builds and destroys it, a worker only
 * runs its stages while its job runs. */
#ifndef FED_CLIENT_SITE_PIPELINE_H
#define FED_CLIENT_SITE_PIPELINE_H

#include "client/client.h"
#include "core/codec.h"
#include "core/model.h"
#include "proto/msg.h"

#include <stddef.h>
#include <stdint.h>

/* A round's update as it passes from stage to stage. */
typedef struct site_update {
    uint64_t round;         /* the round it is for (the noise's stream) */
    float *v;               /* (n) the update in host order: written by "delta", changed
                               in place by later stages, wiped by "mask" */
    size_t n;               /* floats of v */
    const fed_model *model; /* "delta": the trained model (its layout, the local weights) */
    const float *global;    /* "delta": the global weights it trained from */
    /* "attack" lie: trains again from the global weights on resample k (< FED_SITE_LIE_K)
     * of the site's training data and writes that delta (n floats) into out; the trained
     * model is then that training's. NULL: the stage fails. */
    fed_err (*retrain)(void *user, size_t k, float *out);
    void *retrain_user;
    uint8_t *wire;         /* "mask": the message that leaves instead of v (fed_malloc'd;
                              the caller's, also when a later stage fails); NULL: v */
    size_t wire_len;       /* bytes of wire */
    fed_encoding wire_enc; /* Update.encoding of wire ("compress"; "mask": unused) */
} site_update;

/* What the "compress" stage needs of its site. */
typedef struct site_compress {
    bool able;       /* the site announces FED_CAP_CODEC: it compresses when asked */
    uint64_t seed;   /* the site's seed of stochastic rounding (mixed with the round) */
    float **resid;   /* error feedback: the residual (the site's, *resid_n floats) */
    size_t *resid_n; /* floats of *resid; a round of another size starts it at zero */
} site_compress;

typedef struct site_stage site_stage;

/* When a stage runs. */
typedef enum site_stage_when {
    SITE_STAGE_TRAINED, /* right after training, on the thread that trained */
    SITE_STAGE_SENT,    /* when the update is sent, on the I/O thread */
} site_stage_when;

/* What a kind of stage does. */
typedef struct site_stage_type {
    const char *name;     /* "delta", "clip", ... */
    site_stage_when when; /* see above */
    /* Reads and changes u. An error stops the chain and fails the round. NULL:
     * pass-through. */
    fed_err (*apply)(site_stage *s, site_update *u);
    /* Frees what the stage owns (not the stage itself). NULL: nothing. */
    void (*destroy)(site_stage *s);
} site_stage_type;

/* The part of every stage the chain sees; a stage's state struct starts with it. */
struct site_stage {
    const site_stage_type *type;
    site_stage *next;
};

/* Appends s (heap-allocated with fed_malloc) at the end of *chain, which owns it. */
void site_stage_append(site_stage **chain, site_stage *s);
/* Runs, in chain order, the apply() of every stage that runs `when`; stops at the first
 * error. */
fed_err site_stage_run(const site_stage *chain, site_stage_when when, site_update *u) FED_MUST_USE;
/* The names of the chain's stages joined by " -> " into buf (len bytes). */
void site_stage_describe(const site_stage *chain, char *buf, size_t len);
/* Destroys every stage; NULL-safe, sets *chain to NULL. */
void site_stage_destroy_all(site_stage **chain);

/* The chain of the round rs into *chain (empty on entry): one line per stage, in order.
 * sa: the site's secure-aggregation state, which "mask" reads when it runs (borrowed).
 * delegated: the site's train_fn makes the delta itself (a relay): no "delta" stage. On
 * error (FED_ENOMEM) *chain is empty. */
struct site_secagg;
fed_err site_pipe_build(site_stage **chain, const fed_msg_round_start *rs, struct site_secagg *sa,
                        const fed_site_attack *attack, const site_compress *cz,
                        bool delegated) FED_MUST_USE;

/* ---- the stages (one file each) ---- */

/* "delta" (stage_delta.c): v = local - global over the model's trainable tensors, in
 * manifest order (fed_model_delta; n must be fed_model_num_trainable). FED_ENONFINITE
 * when the result is not finite (v is written all the same). */
fed_err site_stage_delta_new(site_stage **chain) FED_MUST_USE;

/* "attack" (stage_attack.c): a simulated malicious site's model poisoning, right after
 * "delta" (a kind of attack whose `when` is SITE_STAGE_TRAINED): sign flip v = -v, scale
 * v = K v, noise v += N(0, S^2) under a key made from attack->seed with the round as its
 * stream (same seed and round: same bytes), lie v = site_lie_combine of FED_SITE_LIE_K
 * deltas from u->retrain. attack is copied; FED_EINVAL for a kind with no stage (none,
 * label flip, backdoor) or a parameter out of range (K = 0 or not finite, S <= 0, Z < 0
 * or not finite). */
fed_err site_stage_attack_new(site_stage **chain, const fed_site_attack *attack) FED_MUST_USE;

/* LIE's update: out[j] = mu_j - z sigma_j over the k rows of d (k x n floats, k >= 2),
 * mu the mean and sigma the sample standard deviation (divisor k - 1), in double, rounded
 * once to float. */
void site_lie_combine(float *out, const float *d, size_t k, size_t n, double z);

/* "clip" (stage_clip.c): v scaled to an L2 norm of at most bound (fed_dp_clip). */
fed_err site_stage_clip_new(site_stage **chain, double bound) FED_MUST_USE;

/* "noise" (stage_noise.c): Gaussian noise of std `std` on every float of v, the stream
 * of the round under key (32 bytes, copied), or under a key drawn afresh for every
 * update when key is NULL (as sites do: nobody can predict or remove it; tests fix it). */
fed_err site_stage_noise_new(site_stage **chain, double std, const uint8_t *key) FED_MUST_USE;

/* "compress" (stage_compress.c): v + the residual encoded with codec into u->wire
 * (u->wire_enc its Update.encoding), the residual becoming what the stream does not
 * carry. cz is copied (its pointers borrowed). The codec's errors (FED_ERANGE: fp16
 * cannot hold a value) fail the round. */
fed_err site_stage_compress_new(site_stage **chain, const fed_codec *codec,
                                const site_compress *cz) FED_MUST_USE;

/* "mask" (stage_mask.c): v clipped to the protocol's range, quantized and masked with
 * sa's client and DELIVERY (fed_sa_client_mask) into u->wire, the MASKED message; v is
 * wiped, whatever the outcome, so that only the masked form stays. rounding_key (32
 * bytes, copied): NULL in production (fresh coins); tests fix it to reproduce the
 * integers. */
fed_err site_stage_mask_new(site_stage **chain, struct site_secagg *sa,
                            const uint8_t *rounding_key) FED_MUST_USE;

#endif
