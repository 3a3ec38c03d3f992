/* One supervised step on one batch: forward, loss, backward, optimizer update; and the
 * matching evaluation of a batch. The epoch loop, data sets, early stopping and
 * metrics files are built on top of these (fedtune train). Labels and targets come
 * from outside and are checked here before any kernel sees them. */
#ifndef FED_TRAIN_H
#define FED_TRAIN_H

#include "core/arena.h"
#include "core/err.h"
#include "core/loss.h"
#include "core/model.h"
#include "core/optim.h"
#include "core/rng.h"

#include <stddef.h>
#include <stdint.h>

/* A batch of n labeled examples, borrowed from the caller. */
typedef struct fed_batch {
    const float *x;        /* (n, input_size) features */
    const int32_t *labels; /* (n) class ids, for FED_LOSS_SOFTMAX_CE; else NULL (a language
                              model's labels are ignored: its targets are in x) */
    const float *targets;  /* (n, output_size) targets, for BCE and MSE; else NULL */
    size_t n;              /* examples */
} fed_batch;

typedef struct fed_loss_config {
    fed_loss_kind kind;    /* which loss */
    float label_smoothing; /* SOFTMAX_CE only, in [0, 1) */
} fed_loss_config;

/* What one step or evaluation measured. */
typedef struct fed_step_stats {
    double loss;      /* mean loss over the batch's predictions */
    size_t count;     /* predictions the mean is over: examples, or for NEXT_TOKEN the
                         predicted tokens (weigh means over batches by it) */
    size_t correct;   /* SOFTMAX_CE, NEXT_TOKEN: arg-max hits; otherwise 0 */
    double grad_norm; /* train step: global gradient norm before clipping (NaN when the
                         optimizer does not clip) */
} fed_step_stats;

/* The loss m trains and evaluates with on a data set of class ids: FED_LOSS_NEXT_TOKEN
 * for a language model (fed_arch_is_lm), FED_LOSS_SOFTMAX_CE otherwise. Every trainer and
 * evaluator asks here, so a model trains the same way centrally and at a site. */
fed_loss_kind fed_loss_for_model(const fed_model *m);

/* Resets the arena, zeroes gradients, and performs one update with learning rate lr.
 * rng drives dropout. FED_ERANGE (message names the example) for a label outside
 * [0, classes) or a non-finite target. */
fed_err fed_train_step(fed_model *m, fed_optim *o, fed_arena *a, const fed_batch *b,
                       const fed_loss_config *loss, float lr, fed_rng *rng,
                       fed_step_stats *stats) FED_MUST_USE;
/* Forward in eval mode and loss, no update; resets the arena first. */
fed_err fed_eval_batch(fed_model *m, fed_arena *a, const fed_batch *b, const fed_loss_config *loss,
                       fed_step_stats *stats) FED_MUST_USE;

#endif
