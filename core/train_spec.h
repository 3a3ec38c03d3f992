/* What a federated round asks a site to train (the protocol's TrainConfig) and the one
 * table of limits that every party applies to it: the site that trains it refuses a
 * value outside them, the coordinator refuses to start with one (so a configuration
 * every site would refuse never reaches a round), and the commands that take the same
 * options (`fedtune train`, `coordinator`, `sim`) use the same ranges in their option
 * tables. What does not live here: the training itself and the translation of a spec
 * into fed_fit's configuration (fed_train_spec_fit, training/fit.h), the wire encoding
 * (proto/msg.h, whose fed_msg_train_config is this struct). */
#ifndef FED_TRAIN_SPEC_H
#define FED_TRAIN_SPEC_H

#include "core/err.h"

#include <stddef.h>
#include <stdint.h>

/* The limits, inclusive unless said otherwise. */
#define FED_TRAIN_EPOCHS_MAX       1000000 /* epochs in [1, this] */
#define FED_TRAIN_BATCH_MAX        65536   /* batch in [1, this] */
#define FED_TRAIN_LR_MAX           10.0    /* lr in (0, this]: 0 is refused */
#define FED_TRAIN_MOMENTUM_MAX     0.9999  /* SGD momentum in [0, this] */
#define FED_TRAIN_WEIGHT_DECAY_MAX 10.0    /* weight decay in [0, this] */
#define FED_TRAIN_CLIP_NORM_MAX    1e9     /* gradient clipping norm in [0, this]; 0: off */
#define FED_TRAIN_OPTIMIZERS       "sgd|adam|adamw"

typedef struct fed_train_spec {
    uint32_t epochs, batch; /* local epochs and batch size */
    const char *optimizer;  /* "sgd", "adam" or "adamw" ("" or NULL: "sgd"); borrowed */
    float lr;               /* constant learning rate */
    float momentum;         /* SGD only (ignored by adam/adamw) */
    float weight_decay;     /* L2 (sgd, adam) or decoupled (adamw) */
    float clip_norm;        /* global gradient-norm clipping, 0: off */
    uint64_t seed;          /* a site trains round r with seed + r */
    uint64_t max_steps;     /* optimizer steps per round at most, 0: no limit */
} fed_train_spec;

/* Checks every field against the limits above. FED_EINVAL naming the field and the
 * range ("config.lr 0: must be in (0, 10]"). */
fed_err fed_train_spec_check(const fed_train_spec *s) FED_MUST_USE;

#endif
