/* The coordinator's aggregation maths, independent of the network: a streaming
 * aggregator that folds client updates into a weighted mean, and the server strategies
 * (FedAvg, FedAvgM, FedAdam, FedYogi) that turn that mean into the next global model.
 * Nothing here knows about sockets, messages, digests or files: the caller feeds values,
 * reports what it checked itself (a digest mismatch is an abort) and stores state.
 *
 * Layout. Every vector here is a flat float vector of n values that the CALLER defines:
 * normally the trainable tensors of the model concatenated in manifest order (see
 * model.h: delta = local - global over the trainable ranges). The aggregator and the
 * strategy only ever see offsets into that vector.
 *
 * The aggregator. An update (one client's delta and its weight, e.g. its example count)
 * arrives in chunks, in order, chunk boundaries anywhere (whole floats). It must not
 * touch the running sum until it is known to be good: finite everywhere, exactly n
 * values, norm within an optional bound. Those facts are known only at the last chunk,
 * and a float sum cannot be un-added without the values, so each update in flight
 * owns a slot: a buffer of n floats it is copied into as it arrives (checking
 * finiteness and accumulating its sum of squares in the same pass), and which is folded
 * into the sum with one axpy at commit. Memory is therefore (1 + slots) x n floats,
 * fixed at creation and independent of the number of clients: with one or two slots a
 * 100 MB model needs 200-300 MB whether 3 or 3000 clients report. Uploads beyond the
 * slots wait: fed_agg_slot_open says FED_EAGAIN and the transport grants such uploads
 * no credit until a slot frees up. The sum is float32 (see fed_agg_result for the
 * error); a double sum would double the largest buffer for no measurable gain.
 *
 * Neither object is thread-safe: one thread (the coordinator's event loop) drives it. */
#ifndef FED_AGGREGATE_H
#define FED_AGGREGATE_H

#include "core/err.h"
#include "core/model.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- the streaming aggregator ------------------------------------------------------- */

/* Most update slots one aggregator may have. */
#define FED_AGG_MAX_SLOTS 64

/* A handle on one update in flight. Handles are never reused: a handle whose update
 * was committed, rejected, aborted or cut off by the end of its round stays invalid
 * (FED_ECANCELED), so a late chunk can never land in another client's update. 0 is
 * never a valid handle; use it for "no slot". */
typedef uint64_t fed_agg_slot;
#define FED_AGG_NO_SLOT ((fed_agg_slot)0)

/* Counters of the current round. */
typedef struct fed_agg_stats {
    size_t accepted; /* updates committed into the sum */
    size_t rejected; /* updates refused by a check, aborted, or still open at the close */
    size_t open;     /* slots in use now */
    double weight;   /* total weight of the accepted updates */
    size_t clipped;  /* accepted updates scaled down to the clipping bound */
    bool closed;     /* fed_agg_result was called: the sum holds the mean */
} fed_agg_stats;

typedef struct fed_agg fed_agg;

/* An aggregator for updates of n floats with `slots` updates in flight at most
 * (1..FED_AGG_MAX_SLOTS), its first round open. Allocates and touches all its memory,
 * (1 + slots) x n floats, once here (first-touch page faults cost more than the fold).
 * FED_EINVAL for n == 0 or a slot count out of range, FED_ENOMEM. */
fed_err fed_agg_new(fed_agg **out, size_t n, size_t slots) FED_MUST_USE;
/* NULL-safe; sets *a to NULL. */
void fed_agg_destroy(fed_agg **a);
/* Floats per update. */
size_t fed_agg_size(const fed_agg *a);

/* Clipping for differential privacy: from the next commit on, an accepted update whose
 * L2 norm exceeds clip is folded scaled by clip / norm (d <- d * min(1, clip / ||d||)),
 * so no update moves the sum by more than w x clip. 0: off (the default). clip must be
 * finite and >= 0 (the caller validates it). */
void fed_agg_set_clip(fed_agg *a, double clip);

/* A per-update hook: called at each commit once the update passed every check, with its
 * values d (n floats, the slot's buffer: read them, do not keep the pointer), its weight
 * and its L2 norm (before clipping), before it is folded. An error rejects the update as
 * a failed check does (the sum is not touched; fed_errmsg() says why). For stages that
 * must see each update (a robust rule spills it). NULL: none (the default). */
typedef fed_err (*fed_agg_observer)(void *user, const float *d, size_t n, double w, double norm);
void fed_agg_set_observer(fed_agg *a, fed_agg_observer fn, void *user);

/* Starts a new round: zeroes the sum and the counters; updates still open are dropped
 * (their handles become invalid) without being counted. */
void fed_agg_begin_round(fed_agg *a);

/* The largest weight of one update: 2^53, the largest count a double holds exactly (the
 * sum of weights is a double; the caller bounds example counts far below this). */
#define FED_AGG_WEIGHT_MAX 9007199254740992.0

/* Opens a slot for an update of weight w (in (0, FED_AGG_WEIGHT_MAX]: the client's example
 * count for FedAvg). FED_EAGAIN when all slots are busy (nothing changes: retry after a
 * commit or abort), FED_EINVAL for a bad weight, FED_ECANCELED when the round is closed. */
fed_err fed_agg_slot_open(fed_agg *a, fed_agg_slot *slot, double w) FED_MUST_USE;

/* Appends the next chunk of an update: values[0..count) are elements
 * [offset, offset + count) of the flat vector; offset must be where the previous chunk
 * ended (0 for the first). Copies the chunk into the slot, checking every value is
 * finite. values is only read, and may be freed on return.
 *
 * Every error except FED_ECANCELED REJECTS the update: its slot is freed, the sum is
 * not touched, the reject counter goes up and fed_errmsg() holds a one-line reason.
 *   FED_EFORMAT     the chunk is out of order or runs past n values
 *   FED_ENONFINITE  a value is NaN or infinite ("value 1234 is nan")
 *   FED_ECANCELED   slot is not an open update (already closed; nothing changes) */
fed_err fed_agg_slot_write(fed_agg *a, fed_agg_slot slot, size_t offset, const float *values,
                           size_t count) FED_MUST_USE;

/* Checks the update and, if it is good, folds w x update into the sum and frees the
 * slot. max_norm bounds the update's L2 norm (0: no bound; a norm equal to the bound
 * passes). On error the update is rejected as for fed_agg_slot_write:
 *   FED_EFORMAT  fewer than n values arrived
 *   FED_ERANGE   the norm is above max_norm, or w x norm could overflow the float sum
 *   FED_EINVAL   max_norm is negative or NaN
 *   FED_ECANCELED slot is not an open update (nothing changes) */
fed_err fed_agg_slot_commit(fed_agg *a, fed_agg_slot slot, double max_norm) FED_MUST_USE;

/* Zero-copy receipt, for a transport that writes an update straight into memory (e.g.
 * fed_server_recv_transfer): *buf points at the slot's own buffer of n floats, which the
 * caller fills whole (nothing is checked while it does) and then hands back with
 * fed_agg_slot_commit_buffer, or gives up with fed_agg_slot_abort. The buffer belongs to
 * the slot until then; after a commit, abort or fed_agg_begin_round it may be reused by
 * another update, so the caller must stop writing into it first (cancel the transfer).
 * Only for a slot no chunk was written to. FED_ECANCELED (and *buf NULL) when slot is
 * not open, FED_EFORMAT when fed_agg_slot_write already wrote to it (nothing changes). */
fed_err fed_agg_slot_buffer(fed_agg *a, fed_agg_slot slot, float **buf) FED_MUST_USE;

/* Checks the whole buffer of a slot filled through fed_agg_slot_buffer (every value
 * finite, its sum of squares for the norm) and then commits it as fed_agg_slot_commit
 * does, with the same errors; FED_ENONFINITE ("value 1234 is nan") rejects the update.
 * FED_EFORMAT rejects an update that was partly written with fed_agg_slot_write. */
fed_err fed_agg_slot_commit_buffer(fed_agg *a, fed_agg_slot slot, double max_norm) FED_MUST_USE;

/* Rejects an update the caller found bad (digest mismatch, wrong round, client gone):
 * frees its slot and counts it rejected. No-op for a handle that is not open. */
void fed_agg_slot_abort(fed_agg *a, fed_agg_slot slot);

/* Closes the round and gives the weighted mean sum_k w_k d_k / sum_k w_k of the
 * accepted updates in *mean: the aggregator's own buffer (n floats), scaled in place,
 * valid until fed_agg_begin_round or fed_agg_destroy. Updates still open are rejected
 * (they are late). Calling it again returns the same mean.
 *
 * Accuracy: each commit adds w_k d_k in float32, in commit order, and the mean is the
 * sum times the float 1/W; over N updates the error is about sqrt(N) float roundings of
 * the terms' magnitude (bench_agg, 1000 clients: rms error 5e-7, largest 2e-6 of the
 * mean's scale), far below the noise of the deltas themselves. The result depends on the commit
 * order, not on chunk boundaries. FED_EINVAL if no update was accepted (the round stays open). */
fed_err fed_agg_result(fed_agg *a, const float **mean) FED_MUST_USE;

/* fed_agg_result with the mean writable, for a caller that perturbs it before the
 * strategy step (differential privacy adds its noise there). */
fed_err fed_agg_result_mut(fed_agg *a, float **mean) FED_MUST_USE;

/* The running weighted sum (the mean after fed_agg_result): n floats, for inspection. */
const float *fed_agg_sum(const fed_agg *a);
fed_agg_stats fed_agg_get_stats(const fed_agg *a);

/* ---- server strategies ---------------------------------------------------------------- */

/* How the server turns the mean delta d of a round into the next global weights w
 * (Reddi et al. 2021, "Adaptive Federated Optimization", Algorithm 2):
 *   FedAvg   w += eta * d                                   (eta = 1: McMahan et al.)
 *   FedAvgM  v = momentum * v + d;  w += eta * v
 *   FedAdam  m = b1*m + (1-b1)*d;  v = b2*v + (1-b2)*d^2;          w += eta*m/(sqrt(v)+tau)
 *   FedYogi  m as Adam;            v = v - (1-b2)*d^2*sign(v-d^2);  w += eta*m/(sqrt(v)+tau)
 * m starts at 0, the momentum buffer at 0, and Adam/Yogi's v at tau^2 (the paper's
 * v_{-1} >= tau^2). There is no bias correction, as in the paper. All arithmetic is
 * float32 in the order written, so a restored state continues bit for bit. */
typedef enum fed_strategy_kind {
    FED_STRATEGY_FEDAVG,
    FED_STRATEGY_FEDAVGM,
    FED_STRATEGY_FEDADAM,
    FED_STRATEGY_FEDYOGI,
} fed_strategy_kind;

typedef struct fed_strategy_config {
    fed_strategy_kind kind; /* update rule */
    float eta;              /* server learning rate, > 0 */
    float momentum;         /* FedAvgM: beta of the notes, in [0, 1) */
    float beta1, beta2;     /* FedAdam/FedYogi: moment decay rates, in [0, 1) */
    float tau;              /* FedAdam/FedYogi: adaptivity, > 0 */
} fed_strategy_config;

/* Defaults for kind: eta 1 for FedAvg and FedAvgM (momentum 0.9); eta 0.01, b1 0.9,
 * b2 0.99, tau 1e-3 for FedAdam and FedYogi (the paper tunes eta per task; so should
 * you). */
fed_strategy_config fed_strategy_defaults(fed_strategy_kind kind);
/* Checks the fields kind uses; FED_EINVAL naming the field ("beta2 1: must be in
 * [0, 1)"). */
fed_err fed_strategy_config_check(const fed_strategy_config *cfg) FED_MUST_USE;
/* "fedavg", "fedavgm", "fedadam", "fedyogi"; and back (FED_EINVAL for another name). */
const char *fed_strategy_name(fed_strategy_kind kind);
fed_err fed_strategy_parse(const char *name, fed_strategy_kind *kind) FED_MUST_USE;

typedef struct fed_strategy fed_strategy;

/* A strategy for vectors of n floats with fresh state (allocated and touched here:
 * 0, 1 or 2 buffers of n floats). FED_EINVAL for a bad config or n == 0, FED_ENOMEM. */
fed_err fed_strategy_new(fed_strategy **out, const fed_strategy_config *cfg, size_t n) FED_MUST_USE;
/* NULL-safe; sets *s to NULL. */
void fed_strategy_destroy(fed_strategy **s);

/* One round's server step over the whole vector: w (n) += step(mean (n)). */
void fed_strategy_step(fed_strategy *s, float *w, const float *mean);
/* The same step over elements [offset, offset + count) only, where w and mean point
 * at element `offset` (for a caller whose weights are not one contiguous run, e.g.
 * trainable tensors between frozen ones). Apply it over ranges covering the vector
 * once, then call fed_strategy_end_round. */
void fed_strategy_apply(fed_strategy *s, size_t offset, size_t count, float *w, const float *mean);
void fed_strategy_end_round(fed_strategy *s);
/* fed_strategy_apply over each trainable tensor of m in manifest order, mean holding
 * their values back to back (fed_model_num_trainable floats, the vector the strategy was
 * made for); then call fed_strategy_end_round. */
void fed_strategy_apply_model(fed_strategy *s, fed_model *m, const float *mean);
/* Rounds stepped since creation (or as restored). */
uint64_t fed_strategy_rounds(const fed_strategy *s);

/* ---- strategy state, for checkpoints ---- */

#define FED_STRATEGY_MAX_BUFS 2

/* What a checkpoint stores besides the raw buffers. Hyperparameters are not state: a
 * restarted coordinator may change eta. */
typedef struct fed_strategy_header {
    uint32_t kind;   /* fed_strategy_kind the buffers belong to */
    uint32_t nbufs;  /* state buffers: 0 FedAvg, 1 FedAvgM, 2 FedAdam/FedYogi */
    uint64_t n;      /* floats per buffer */
    uint64_t rounds; /* rounds stepped */
} fed_strategy_header;

/* Describes the state without copying: fills *h and points bufs[0..h->nbufs) at the
 * strategy's own buffers (valid until its next step), named by names[i] ("momentum";
 * "m", "v"), for the caller to write out. */
void fed_strategy_state(const fed_strategy *s, fed_strategy_header *h,
                        const float *bufs[FED_STRATEGY_MAX_BUFS],
                        const char *names[FED_STRATEGY_MAX_BUFS]);
/* Restores state read back from a checkpoint (copies bufs[0..h->nbufs)). Everything is
 * checked before anything changes: FED_EINVAL if the state is for another kind,
 * FED_EFORMAT for an impossible header, FED_ESHAPE for another n, FED_ENONFINITE for a
 * NaN or infinity, FED_ERANGE for a negative second moment. */
fed_err fed_strategy_restore(fed_strategy *s, const fed_strategy_header *h,
                             const float *const bufs[]) FED_MUST_USE;

#endif
